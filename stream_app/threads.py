"""Thread pools of the numeric libraries a process loads.

numpy's BLAS (OpenBLAS in the numpy wheel) starts one thread per core and keeps them
spinning between calls. A worker's calls are small (a micro-batch's users against a few
thousand items): the second thread adds little speed and burns a core while it waits,
the core the broker, Redis or the trainer beside the worker wanted (measured in
docs/scaling.md: CPU per event about halves, latency the same or lower).
"""
from __future__ import annotations

from typing import Any


def limit_blas(threads: int) -> list[dict[str, Any]]:
    """numpy's BLAS held to ``threads`` threads in this process (0: left as the library
    set it); the BLAS libraries now loaded, as threadpoolctl describes them."""
    import numpy  # noqa: F401 - loads the BLAS library the limit applies to
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads > 0:
        threadpool_limits(limits=threads, user_api="blas")  # stays after the call
    return [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
