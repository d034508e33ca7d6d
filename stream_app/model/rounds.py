"""When a training round runs and what it may learn from (pure decisions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RoundPolicy:
    """A round starts when its batch is full, or when its oldest example waited too long."""

    batch_size: int
    max_wait_s: float

    def due(self, pending: int, oldest_waited_s: float) -> bool:
        return pending >= self.batch_size or (pending > 0 and oldest_waited_s >= self.max_wait_s)


def split_holdout(examples: Sequence[T], fraction: float,
                  ts: Callable[[T], float]) -> tuple[list[T], list[T]]:
    """(train, held out): the newest ``fraction`` by event time is held out, so a candidate
    is judged on choices made after everything it learned from."""
    ordered = sorted(examples, key=ts)
    if len(ordered) < 2:
        return ordered, []
    cut = min(len(ordered) - 1, max(1, round(len(ordered) * (1.0 - fraction))))
    return ordered[:cut], ordered[cut:]


def promotion(candidate: Mapping[str, float], current: Mapping[str, float],
              base: Mapping[str, float], tolerance: float = 0.0) -> tuple[bool, str]:
    """(promote?, why) from held-out scores: a candidate is promoted when its NDCG@10 is
    not below the plain encoder's, so a chain of small steps cannot drift below where it
    began, nor below the current version's by more than the share ``tolerance`` (a
    candidate has learned from newer choices: one small window's noise should not keep
    the workers on an older version)."""
    if candidate["n"] == 0:
        return False, "no held-out examples"
    if candidate["ndcg@10"] < current["ndcg@10"] * (1.0 - tolerance):
        return False, "held-out NDCG@10 worse than the current version's"
    if candidate["ndcg@10"] < base["ndcg@10"]:
        return False, "held-out NDCG@10 worse than the plain encoder's"
    return True, ("held-out NDCG@10 not below the encoder's, nor below the current version's "
                  "by more than the tolerance")


@dataclass
class Standing:
    """The current version against the plain encoder, pooled over the held-out windows
    judged since it was promoted (not the one that promoted it: it was chosen for
    winning there). One 400-choice window of a few bursty users is too noisy a reason
    to throw away what the versions learned."""

    windows: int = 0
    n: int = 0
    current: float = 0.0  # NDCG@10 summed over the examples
    base: float = 0.0

    def add(self, current: Mapping[str, float], base: Mapping[str, float]) -> None:
        self.windows += 1
        self.n += int(current["n"])
        self.current += current["ndcg@10"] * current["n"]
        self.base += base["ndcg@10"] * base["n"]

    def should_revert(self, needed: int) -> bool:
        """At least ``needed`` windows, and the encoder ahead over them."""
        return self.windows >= needed and self.n > 0 and self.current < self.base
