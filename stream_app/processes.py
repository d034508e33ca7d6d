"""Worker child processes for `up`, `demo`, `bench`, `replay` and the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import IO, Any, Iterator

from stream_app.config import Settings
from stream_app.embedded import LocalStack, free_port
from stream_app.kafka_io import ensure_topics


class WorkerProcess:
    """`python -m stream_app worker` (or ``trainer``) with the given settings in its
    environment."""

    def __init__(self, settings: Settings, stdout: IO[bytes] | int | None = None,
                 command: str = "worker") -> None:
        self.settings = settings
        self.stdout = stdout
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def start(self) -> "WorkerProcess":
        env = {**os.environ, **self.settings.env(), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app", self.command], env=env,
                                     stdout=self.stdout, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.command} not healthy at {self.url} after {timeout}s")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful: SIGTERM lets Faust commit offsets and leave the group."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is committed or flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextmanager
def local_system(settings: Settings, trainer: bool = False, **overrides: Any
                 ) -> Iterator[tuple[LocalStack, Settings, "WorkerProcess | None"]]:
    """Embedded broker/Redis where not configured, plus one worker (and the trainer when
    asked); their logs shown on failure."""
    with LocalStack(settings) as stack, tempfile.TemporaryFile() as log:
        s = stack.settings.replace(web_port=free_port(), **overrides)
        asyncio.run(ensure_topics(s.kafka(), s.topics(), s.topic_partitions,
                                  s.topic_replication))  # before the worker subscribes
        processes = [WorkerProcess(s, stdout=log).start()]
        if trainer:
            processes.append(WorkerProcess(s.replace(web_port=free_port()), stdout=log,
                                           command="trainer").start())
        try:
            for p in processes:
                p.wait_healthy()
            yield stack, s, processes[1] if trainer else None
        except BaseException:
            log.seek(0)
            print("--- worker log (tail) ---\n" + log.read().decode(errors="replace")[-4000:],
                  file=sys.stderr)
            raise
        finally:
            for p in processes:
                p.stop()
