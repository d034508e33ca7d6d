"""The README's walk-through against `stream-app up`, run as written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.embedded import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    after = text.split("Against a running `stream-app up`", 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_walkthrough_against_stream_app_up(redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAM_APP_") and k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.update(REDIS_URL=redis_url, WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    up = subprocess.Popen([sys.executable, "-m", "stream_app", "up"], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True)
    output = []
    try:
        deadline = time.monotonic() + 240
        export = None
        while export is None:
            assert time.monotonic() < deadline, "".join(output)[-3000:]
            line = up.stdout.readline().decode(errors="replace")
            assert line or up.poll() is None, "".join(output)[-3000:]
            output.append(line)
            if line.startswith("export "):
                export = line.strip()
        (tmp_path / "stream_app").symlink_to(ROOT / "stream_app")  # the README's paths
        script = "\n".join(["set -euo pipefail", export, *_walkthrough()])
        done = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        loaded = re.search(r"(\d+) items sent to items, (\d+) embedded and in the catalog",
                           done.stdout)
        assert loaded and loaded.group(1) == loaded.group(2) == "320", done.stdout[:500]
        assert '"event_id"' in done.stdout and '"items"' in done.stdout  # the recommendation
        assert '"events_applied": 1' in done.stdout.replace('"events_applied":1',
                                                             '"events_applied": 1')
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
