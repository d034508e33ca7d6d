"""Streaming item popularity: a decayed interaction count per item, in event time."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from stream_app.model.interest import decay_factor

# Interactions that say nothing good about an item do not make it popular.
NOT_POPULAR = frozenset({"dislike", "skip"})


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

    def add(self, increments: Iterable[tuple[str, float, float]]) -> None:
        for item_id, weight, at in increments:
            value, ts = self.entries.get(item_id, (0.0, at))
            self.entries[item_id] = decayed_add(value, ts, weight, at, self.half_life)

    def replace(self, entries: Mapping[str, tuple[float, float]],
                positions: Mapping[int, str] | None = None, at: float = -math.inf) -> None:
        """The whole shared hash, as of log ``positions`` (shard -> position), read at
        ``at``."""
        self.entries = dict(entries)
        self.positions, self.loaded_at = dict(positions or {}), at

    def update(self, changes: Iterable[tuple[str, tuple[float, float] | None]]) -> int:
        """Values the shared hash took, in order (None: the item's count was removed);
        returns how many."""
        n = 0
        for item_id, entry in changes:
            if entry is None:
                self.entries.pop(item_id, None)
            else:
                self.entries[item_id] = entry
            n += 1
        return n

    def prior(self, item_ids: Sequence[str], at: float) -> np.ndarray:
        """log(1 + decayed count) for each item, as of event time ``at``."""
        values = np.zeros(len(item_ids), dtype=np.float64)
        stamps = np.zeros(len(item_ids), dtype=np.float64)
        get = self.entries.get
        found = [get(item_id) for item_id in item_ids]  # most items have no count
        at_rows = [n for n, entry in enumerate(found) if entry is not None]
        if at_rows:
            known = np.array([found[n] for n in at_rows], np.float64)
            values[at_rows], stamps[at_rows] = known[:, 0], known[:, 1]
        if np.isinf(self.half_life):
            factors = np.ones_like(values)
        else:
            factors = np.exp2(-np.maximum(at - stamps, 0.0) / self.half_life)
        return np.log1p(values * factors).astype(np.float32)
