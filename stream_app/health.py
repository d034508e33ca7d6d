"""Is a process alive, and is it ready: the answers of ``/healthz`` and ``/readyz``.

Pure bookkeeping (no I/O): the batch loops report retries and progress, the start-up
reports what it waits for, a timer reports consumer lag; ``problems`` turns that into
the reasons a load balancer or Kubernetes should hold traffic back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass
class Health:
    retry_after_s: float  # a batch retrying this long makes the process not ready
    stall_after_s: float  # lag above zero this long without progress: not ready
    clock: Callable[[], float] = time.monotonic
    waiting_for: str | None = "starting"  # what start-up waits for (None: started)
    _retrying: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    _progress_at: float | None = None
    _lag: dict[str, int] = field(default_factory=dict)
    _lag_since: float | None = None  # when lag was last seen at zero ... or first above

    def waiting(self, reason: str) -> None:
        self.waiting_for = reason

    def started(self) -> None:
        self.waiting_for = None
        self._progress_at = self.clock()

    def retrying(self, topic: str, cause: str, error: str) -> None:
        """A batch of ``topic`` failed on infrastructure and will be retried."""
        since = self._retrying.get(topic, (self.clock(), "", ""))[0]
        self._retrying[topic] = (since, cause, error)

    def progressed(self, topic: str) -> None:
        """A batch of ``topic`` went through."""
        self._retrying.pop(topic, None)
        self._progress_at = self.clock()

    def lag(self, per_partition: Mapping[str, int]) -> None:
        """Records behind the end of each assigned partition."""
        self._lag = dict(per_partition)
        if sum(self._lag.values()) <= 0:
            self._lag_since = None
        elif self._lag_since is None:
            self._lag_since = self.clock()

    @property
    def lag_total(self) -> int:
        return sum(self._lag.values())

    def retrying_now(self) -> dict[str, dict[str, object]]:
        now = self.clock()
        return {topic: {"for_s": round(now - since, 1), "cause": cause, "error": error[:300]}
                for topic, (since, cause, error) in self._retrying.items()}

    def problems(self) -> list[str]:
        """Why the process is not ready; empty when it is."""
        now = self.clock()
        out = []
        if self.waiting_for is not None:
            out.append(f"waiting for {self.waiting_for}")
        for topic, (since, cause, error) in self._retrying.items():
            if now - since >= self.retry_after_s:
                out.append(f"{topic}: a batch has been retrying for {now - since:.0f} s "
                           f"({cause}: {error[:200]})")
        if self._lag_since is not None:
            idle_since = max(self._lag_since, self._progress_at or self._lag_since)
            if now - idle_since >= self.stall_after_s:
                out.append(f"lag {self.lag_total} records and no batch finished for "
                           f"{now - idle_since:.0f} s")
        return out
