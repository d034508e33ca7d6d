"""The fault-injection suite of issue 12 (`stream_app/chaos.py`).

20,000 valid activity events through two workers over 140 s, while a worker is SIGKILLed
twice, Redis and the broker are each frozen (SIGSTOP) for 15 s and Redis is filled to
maxmemory once, with oversize, deeply nested, future-timestamp and huge-rating records
mixed in. The run starts its own redis-server and broker (tansu) to do that to them.

After recovery: every valid event changed its user's state exactly once and got a
recommendation, every invalid record is in dead letters with its reason, no valid event
is, no worker exited on its own, and every partition came back to fresh recommendations
after each fault.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app import logs
from stream_app.chaos import format_report, run_chaos
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def _print_logs(log_dir: Path) -> None:
    for path in sorted(log_dir.glob("*.log")):
        print(f"--- {path.name} (tail) ---\n" + path.read_text(errors="replace")[-3000:])


@pytest.mark.timeout(900)
def test_faults_lose_nothing_apply_once_and_dead_letter_only_invalid_records(tmp_path):
    # endpoints, key prefix and partitions are the run's own (it starts Redis and the broker)
    settings = make_settings("", "", "chaos")
    logger = logs.logger
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    logs.setup("info")  # progress lines while it runs (visible with -s)
    try:
        report = run_chaos(settings, events=20000, log_dir=tmp_path)
    except BaseException:
        _print_logs(tmp_path)
        raise
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    print(format_report(report))
    failed = {name: c["detail"] for name, c in report["checks"].items() if not c["ok"]}
    if failed:
        _print_logs(tmp_path)

    ev = report["events"]
    assert ev["valid"] == 20000 and ev["invalid"] > 0 and ev["undelivered"] == 0
    assert len(report["faults"]) == 5  # two kills, Redis stop, Redis full, broker stop
    assert not failed, "failed checks:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items())
