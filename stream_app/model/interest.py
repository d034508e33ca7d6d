"""A user's interest state and its event-time exponential decay.

u <- exp(-ln2 * dt / half_life) * u + w * e, with dt measured in event time.
An event older than the last one applied is added with its own decay
(w * exp(-ln2 * (last - ts) / half_life) * e), so history is never re-ordered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from stream_app.contract import ActivityEvent

LN2 = math.log(2.0)


def decay_factor(dt: float, half_life: float) -> float:
    """Weight left after dt seconds; dt <= 0 leaves everything."""
    if dt <= 0:
        return 1.0
    return math.exp(-LN2 * dt / half_life)


def event_weight(event: ActivityEvent, weights: dict[str, float], rating_neutral: float) -> float:
    """Signed strength of an event: ratings below neutral (and dislikes, skips) repel."""
    base = weights[event.type]
    if event.type == "rate":
        return base * ((event.rating if event.rating is not None else rating_neutral)
                       - rating_neutral)
    return base


@dataclass(frozen=True)
class InterestState:
    """What Redis holds for a user (besides the seen set)."""

    vector: np.ndarray | None = None  # float32, unnormalised decayed sum
    last_ts: float | None = None
    n_events: int = 0
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> last applied offset
    recent_ids: tuple[str, ...] = ()  # event ids applied lately, oldest first

    def is_applied(self, event: ActivityEvent) -> bool:
        """True for a replay (offset already passed) or a duplicate event id."""
        last = self.offsets.get(event.partition)
        if last is not None and event.offset <= last:
            return True
        return event.event_id in self.recent_ids


def apply_event(state: InterestState, event: ActivityEvent, vector: np.ndarray, weight: float,
                half_life: float, dedupe_window: int) -> InterestState:
    """State after one event; the caller checks ``is_applied`` first."""
    vec = np.asarray(vector, dtype=np.float32)
    if state.vector is None or state.last_ts is None:
        new_vec, last_ts = weight * vec, event.ts
    elif event.ts >= state.last_ts:
        new_vec = decay_factor(event.ts - state.last_ts, half_life) * state.vector + weight * vec
        last_ts = event.ts
    else:
        new_vec = state.vector + weight * decay_factor(state.last_ts - event.ts, half_life) * vec
        last_ts = state.last_ts
    offsets = dict(state.offsets)
    offsets[event.partition] = max(event.offset, offsets.get(event.partition, -1))
    recent = (state.recent_ids + (event.event_id,))[-dedupe_window:] if dedupe_window > 0 else ()
    return replace(state, vector=new_vec.astype(np.float32), last_ts=last_ts,
                   n_events=state.n_events + 1, offsets=offsets, recent_ids=recent)


def query_vector(state: InterestState) -> np.ndarray | None:
    """Unit direction to rank with (None when there is nothing to go on)."""
    if state.vector is None:
        return None
    norm = float(np.linalg.norm(state.vector))
    if norm < 1e-12:
        return None
    return state.vector / norm
