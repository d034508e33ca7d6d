"""numpy's BLAS threads: every command's process holds them to ``blas_threads``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


# OpenBLAS starts a thread per CPU this process may run on: on one, every count is 1 and
# these tests could not fail
pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                reason="one usable CPU: the library's default is 1 thread")

PROBE = ("from stream_app.cli import _settings; from stream_app.threads import limit_blas; "
         "_settings(); print(sorted({p['num_threads'] for p in limit_blas(0)}))")


def _threads_seen(code: str, **env: str) -> str:
    """What ``code`` prints in a fresh process with no *_NUM_THREADS and ``env`` set."""
    base = {k: v for k, v in os.environ.items()
            if not k.endswith("_NUM_THREADS") and k != "STREAM_APP_BLAS_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=base | env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_commands_hold_blas_to_one_thread_by_default():
    assert _threads_seen(PROBE) == "[1]"


def test_zero_keeps_the_librarys_threads():
    assert _threads_seen(PROBE, STREAM_APP_BLAS_THREADS="0") not in ("[1]", "[]")


def test_training_process_holds_blas_to_its_threads():
    code = ("from stream_app.model.objective import training_process; "
            "from stream_app.threads import limit_blas; training_process(1); "
            "print(sorted({p['num_threads'] for p in limit_blas(0)}))")
    assert _threads_seen(code) == "[1]"


def test_a_workers_setup_holds_every_blas_it_loaded():
    """The worker's and trainer's setup loads the text model, and transformers loads
    scipy with a BLAS of its own: held too."""
    code = ("from stream_app.cli import _process_setup; from stream_app.threads import "
            "limit_blas; _process_setup(); pools = limit_blas(0); "
            "print(len(pools), sorted({p['num_threads'] for p in pools}))")
    count, threads = _threads_seen(code).splitlines()[-1].split(" ", 1)
    assert threads == "[1]", (count, threads)
