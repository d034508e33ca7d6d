"""Streaming item popularity: a decayed interaction count per item, in event time."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from stream_app.model.interest import decay_factor

# Interactions that say nothing good about an item do not make it popular.
NOT_POPULAR = frozenset({"dislike", "skip"})
# ids whose entry changed that ``take_changed`` keeps; past this, "any may have"
MAX_CHANGED = 100_000


def decayed_add(value: float, ts: float, weight: float, at: float,
                half_life: float) -> tuple[float, float]:
    """(value, ts) after adding ``weight`` at event time ``at``; older events with their own decay."""
    if at >= ts:
        return value * decay_factor(at - ts, half_life) + weight, at
    return value + weight * decay_factor(ts - at, half_life), ts


class Popularity:
    """Item -> (decayed count, as-of ts); the ranking prior is log(1 + count decayed to now).

    A worker's copy of the deployment-wide counts: ``replace`` with the whole shared hash,
    then ``update`` with the values it took since (the shared log of each of its shards),
    from ``positions``."""

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.entries: dict[str, tuple[float, float]] = {}
        # where in each shard's log ``entries`` stand (empty: the hash was never read)
        self.positions: dict[int, str] = {}
        self.loaded_at = -math.inf  # when the whole hash was last read (time.monotonic)
        self._changed: set[str] | None = None  # since ``take_changed``; None: any

    def _mark(self, item_id: str) -> None:
        if self._changed is not None:
            self._changed.add(item_id)
            if len(self._changed) > MAX_CHANGED:
                self._changed = None

    def take_changed(self) -> set[str] | None:
        """The ids whose entry changed since the last call (None: any may have), for the
        one copy of the entries that follows them (``catalog.PriorRows``)."""
        changed, self._changed = self._changed, set()
        return changed

    def add(self, increments: Iterable[tuple[str, float, float]]) -> None:
        for item_id, weight, at in increments:
            value, ts = self.entries.get(item_id, (0.0, at))
            self.entries[item_id] = decayed_add(value, ts, weight, at, self.half_life)
            self._mark(item_id)

    def replace(self, entries: Mapping[str, tuple[float, float]],
                positions: Mapping[int, str] | None = None, at: float = -math.inf) -> None:
        """The whole shared hash, as of log ``positions`` (shard -> position), read at
        ``at``."""
        self.entries = dict(entries)
        self.positions, self.loaded_at = dict(positions or {}), at
        self._changed = None

    def update(self, changes: Iterable[tuple[str, tuple[float, float] | None]]) -> int:
        """Values the shared hash took, in order (None: the item's count was removed);
        returns how many."""
        n = 0
        for item_id, entry in changes:
            if entry is None:
                self.entries.pop(item_id, None)
            else:
                self.entries[item_id] = entry
            self._mark(item_id)
            n += 1
        return n

    def prior(self, item_ids: Sequence[str], at: float) -> np.ndarray:
        """log(1 + decayed count) for each item, as of event time ``at``."""
        return self.prior_of(*self.entries_of(item_ids), at)

    def entries_of(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each item's (decayed count, as-of ts) as two arrays; (0, 0) for no count."""
        values = np.zeros(len(item_ids), dtype=np.float64)
        stamps = np.zeros(len(item_ids), dtype=np.float64)
        get = self.entries.get
        found = [get(item_id) for item_id in item_ids]  # most items have no count
        at_rows = [n for n, entry in enumerate(found) if entry is not None]
        if at_rows:
            known = np.array([found[n] for n in at_rows], np.float64)
            values[at_rows], stamps[at_rows] = known[:, 0], known[:, 1]
        return values, stamps

    def prior_of(self, values: np.ndarray, stamps: np.ndarray, at: float) -> np.ndarray:
        """``prior`` of items whose ``entries_of`` are these."""
        if np.isinf(self.half_life):
            factors = np.ones_like(values)
        else:
            factors = np.exp2(-np.maximum(at - stamps, 0.0) / self.half_life)
        return np.log1p(values * factors).astype(np.float32)
