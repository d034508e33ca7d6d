"""Whose fault a failure is: the infrastructure's (retry the batch) or a record's own.

A batch that fails because Redis, Kafka or the model is unavailable is retried,
with capped and jittered backoff, until it goes through: its records are never
dead-lettered and its offsets never committed meanwhile. Only a record that
still fails on its own, once the batch has been split (``pipeline.isolate``),
goes to dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import re
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from redis import exceptions as redis_errors

from stream_app.logs import log


class EncoderError(RuntimeError):
    """The model failed on a whole batch (out of memory, a broken runtime): retried."""


# Redis refusing to work for now, by class ...
_REDIS_DOWN: dict[type[BaseException], str] = {
    redis_errors.BusyLoadingError: "redis_loading",  # before ConnectionError: a subclass
    redis_errors.ConnectionError: "redis_connection",
    redis_errors.TimeoutError: "redis_timeout",
    redis_errors.OutOfMemoryError: "redis_oom",
    redis_errors.ReadOnlyError: "redis_readonly",
    redis_errors.NoScriptError: "redis_noscript",
    redis_errors.ClusterError: "redis_cluster",
    redis_errors.ClusterDownError: "redis_cluster",
    redis_errors.TryAgainError: "redis_cluster",
    redis_errors.MasterDownError: "redis_cluster",
    redis_errors.MovedError: "redis_cluster",
    redis_errors.AskError: "redis_cluster",
    redis_errors.SlotNotCoveredError: "redis_cluster",
    redis_errors.RedisClusterException: "redis_cluster",
    redis_errors.MaxConnectionsError: "redis_connection",
    redis_errors.AuthenticationError: "redis_auth",
    redis_errors.NoPermissionError: "redis_auth",
}

# ... and by the error code of a reply (a pipeline reports the first failed command
# as "Command # n (...) of pipeline caused error: <CODE> ...").
_REDIS_CODES = {"OOM": "redis_oom", "READONLY": "redis_readonly", "LOADING": "redis_loading",
                "NOSCRIPT": "redis_noscript", "CLUSTERDOWN": "redis_cluster",
                "TRYAGAIN": "redis_cluster", "MASTERDOWN": "redis_cluster",
                "MOVED": "redis_cluster", "ASK": "redis_cluster", "BUSY": "redis_busy",
                "MISCONF": "redis_misconf", "NOREPLICAS": "redis_cluster",
                "NOAUTH": "redis_auth", "NOPERM": "redis_auth", "WRONGPASS": "redis_auth"}
_CODE = re.compile(r"(?:^|caused error: )([A-Z]+)\b")


def infrastructure_cause(exc: BaseException) -> str | None:
    """A short label (a metric label) when ``exc`` is the infrastructure's fault, else None."""
    for cls, label in _REDIS_DOWN.items():
        if isinstance(exc, cls):
            return label
    if isinstance(exc, redis_errors.ResponseError):
        found = _CODE.search(str(exc))
        return _REDIS_CODES.get(found.group(1)) if found else None
    if isinstance(exc, (ProducerSendError, KafkaError)):
        return "kafka"
    if isinstance(exc, EncoderError):
        return "encoder"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return None


def is_infrastructure(exc: BaseException) -> bool:
    return infrastructure_cause(exc) is not None


@contextlib.contextmanager
def passed_over(event: str, **fields: object) -> Iterator[None]:
    """A step that may be skipped when the infrastructure fails (a timer's refresh, an
    announcement, counters): such a fault is logged as ``event`` (a warning) and the
    block is left; any other exception, a bug, still raises."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - classified: a bug still raises
        if not is_infrastructure(exc):
            raise
        log(event, level=logging.WARNING, **fields, error=repr(exc))


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n (from 1) waits uniformly in
    [c/2, c] with c = min(cap, base * 2**(n-1)), so workers retrying one Redis spread out."""

    base_s: float = 0.1
    cap_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(attempt - 1, 0), 30))
        return (rng or random).uniform(ceiling / 2, ceiling)


class Every:
    """``due()`` is true the first time and then at most once per ``seconds``: a fault
    that lasts is logged once a minute, not once per retry."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self._last is None or now - self._last >= self.seconds:
            self._last = now
            return True
        return False
