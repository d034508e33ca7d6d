"""A user's interests: up to K decayed vectors, each with short- and long-term strength.

Every interest is an exponentially decayed sum of the event vectors it absorbed
(event time, long half-life), with two strengths: a long-term one (weeks) and a
short-term one (hours, the session). A positive event strengthens the closest
interest, or opens a new one when none is close enough (replacing the weakest
once K are open). A negative event (dislike, skip, low rating) weakens and pushes
away the interests it resembles, in proportion to the resemblance.

Decay: x <- exp(-ln2 * dt / half_life) * x + w, dt in event time. An event older
than an interest's last update is added with its own decay; history is never
re-ordered.

The state also keeps the user's latest chosen items (ids and event times, in event
order): the sequence a fine-tuned model reads (``adapter.py``). Ids are the same in
every model version, so the state needs no migration when versions change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from stream_app.contract import ActivityEvent

LN2 = math.log(2.0)
NO_DECAY = math.inf  # a half-life that never halves
# Event types that say the user chose the item (skips, dislikes and text do not).
CHOICES = frozenset({"view", "click", "like", "purchase", "rate"})


def decay_factor(dt: float, half_life: float) -> float:
    """Weight left after dt seconds; dt <= 0 (or an infinite half-life) leaves everything."""
    if dt <= 0 or math.isinf(half_life):
        return 1.0
    return math.exp(-LN2 * dt / half_life)


@dataclass(frozen=True)
class InterestParams:
    """The interest model's parameters (no defaults here: ``Settings`` holds them)."""

    max_interests: int
    long_half_life_s: float
    short_half_life_s: float
    short_term_weight: float  # how much the session counts against the long term
    open_threshold: float  # cosine below which an event opens a new interest
    dedupe_window: int
    recent_items: int  # latest chosen items kept in the state


def event_weight(event: ActivityEvent, weights: dict[str, float], rating_neutral: float) -> float:
    """Signed strength of an event: ratings below neutral (and dislikes, skips) repel."""
    base = weights[event.type]
    if event.type == "rate":
        return base * ((event.rating if event.rating is not None else rating_neutral)
                       - rating_neutral)
    return base


@dataclass(frozen=True)
class Interest:
    vector: np.ndarray  # float32, decayed sum of absorbed event vectors (long half-life)
    long: float  # long-term strength as of ts
    short: float  # short-term strength as of ts
    ts: float  # last update, event time
    source: str  # item id, or "text:<...>", that contributed most
    source_weight: float  # that contribution, as of ts

    def direction(self) -> np.ndarray:
        """The unit vector (read-only: computed once, an interest never changes)."""
        return self._direction

    @cached_property
    def _direction(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.vector))
        unit = self.vector / norm if norm > 1e-12 else self.vector.copy()
        unit.flags.writeable = False
        return unit

    def strength(self, at: float, p: InterestParams) -> float:
        """Blended strength at event time ``at`` (never negative)."""
        dt = at - self.ts
        value = (self.long * decay_factor(dt, p.long_half_life_s)
                 + p.short_term_weight * self.short * decay_factor(dt, p.short_half_life_s))
        return max(value, 0.0)


@dataclass(frozen=True)
class UserState:
    """What Redis holds for a user besides the seen set."""

    interests: tuple[Interest, ...] = ()
    last_ts: float | None = None
    n_events: int = 0
    # "topic/partition" -> highest offset applied from it
    offsets: dict[str, int] = field(default_factory=dict)
    recent_ids: tuple[str, ...] = ()  # event ids applied lately, oldest first
    recent_items: tuple[tuple[str, float], ...] = ()  # (item id, ts) chosen lately, by ts

    def recent_item_ids(self) -> tuple[str, ...]:
        return self._recent_item_ids

    @cached_property
    def _recent_item_ids(self) -> tuple[str, ...]:  # once per state: a state never changes
        return tuple(item for item, _ in self.recent_items)

    def is_applied(self, event: ActivityEvent) -> bool:
        """True for an event id applied lately (a redelivery, a producer's retry)."""
        return event.event_id in self.recent_ids

    def rewound(self, event: ActivityEvent) -> bool:
        """An unseen event at or below the offset already applied from its partition: the
        topic was recreated or the group's offsets reset. Applied all the same (and counted):
        only the event id says whether an event is a duplicate."""
        last = self.offsets.get(source_of(event))
        return last is not None and event.offset <= last

    def strengths(self, at: float, p: InterestParams) -> np.ndarray:
        return np.array([i.strength(at, p) for i in self.interests], dtype=np.float64)


def _absorb(interest: Interest, vec: np.ndarray, w: float, ts: float, source: str,
            p: InterestParams) -> Interest:
    """Add w*vec to one interest at event time ts (older events with their own decay)."""
    if ts >= interest.ts:
        f_long = decay_factor(ts - interest.ts, p.long_half_life_s)
        f_short = decay_factor(ts - interest.ts, p.short_half_life_s)
        vector = f_long * interest.vector + w * vec
        long, short = f_long * interest.long + w, f_short * interest.short + w
        kept = interest.source_weight * f_long
        new_ts, w_now = ts, w
    else:
        f_long = decay_factor(interest.ts - ts, p.long_half_life_s)
        f_short = decay_factor(interest.ts - ts, p.short_half_life_s)
        vector = interest.vector + w * f_long * vec
        long, short = interest.long + w * f_long, interest.short + w * f_short
        kept, new_ts, w_now = interest.source_weight, interest.ts, w * f_long
    if w_now > kept:
        source, kept = source, w_now
    else:
        source = interest.source
    return Interest(vector.astype(np.float32), long, short, new_ts, source, kept)


def apply_event(state: UserState, event: ActivityEvent, vector: np.ndarray, weight: float,
                source: str, p: InterestParams) -> UserState:
    """State after one event; the caller checks ``is_applied`` first."""
    vec = np.asarray(vector, dtype=np.float32)
    interests = list(state.interests)
    if interests and weight != 0:
        sims = np.array([float(i.direction() @ vec) for i in interests])
    else:
        sims = np.zeros(len(interests))
    if weight > 0 and p.max_interests > 0:
        best = int(np.argmax(sims)) if interests else -1
        if best >= 0 and sims[best] >= p.open_threshold:
            interests[best] = _absorb(interests[best], vec, weight, event.ts, source, p)
        else:
            fresh = Interest(weight * vec, weight, weight, event.ts, source, weight)
            if len(interests) < p.max_interests:
                interests.append(fresh)
            else:
                weakest = int(np.argmin([i.strength(event.ts, p) for i in interests]))
                interests[weakest] = fresh
    elif weight < 0:
        for n, sim in enumerate(sims):
            if sim > 0:
                interests[n] = _absorb(interests[n], vec, weight * float(sim), event.ts,
                                       interests[n].source, p)
        interests = [i for i in interests if i.long > 1e-6]
    recent = state.recent_items
    if event.item_id is not None and event.type in CHOICES and p.recent_items > 0:
        recent = _chosen(state, event.item_id, event.ts, p.recent_items)
    offsets = dict(state.offsets)
    offsets[source_of(event)] = max(event.offset, offsets.get(source_of(event), -1))
    return replace(state, interests=tuple(interests),
                   last_ts=event.ts if state.last_ts is None else max(state.last_ts, event.ts),
                   n_events=state.n_events + 1, offsets=offsets, recent_items=recent,
                   recent_ids=(state.recent_ids + (event.event_id,))[-p.dedupe_window:]
                   if p.dedupe_window > 0 else ())


def forgotten_ids(state: UserState, event: ActivityEvent, p: InterestParams
                  ) -> tuple[str, ...]:
    """What a ``forget`` leaves of a user: the latest event ids, itself included, so a
    redelivered batch is recognised instead of applied again."""
    ids = state.recent_ids + (event.event_id,)
    return ids[-p.dedupe_window:] if p.dedupe_window > 0 else ()


def source_of(event: ActivityEvent) -> str:
    """Where an event's offset counts: its topic and partition."""
    return f"{event.topic}/{event.partition}"


def _chosen(state: UserState, item_id: str, ts: float, keep: int
            ) -> tuple[tuple[str, float], ...]:
    """The latest ``keep`` chosen items in event-time order after ``state``'s; an item
    chosen again moves up."""
    recent = state.recent_items
    if item_id not in state.recent_item_ids() and (not recent or recent[-1][1] <= ts):
        # the usual case: a new item, in order
        return (recent + ((item_id, ts),))[-keep:]
    kept = [(i, t) for i, t in recent if i != item_id]
    at = len(kept)
    while at > 0 and kept[at - 1][1] > ts:  # a late event goes where its time puts it
        at -= 1
    kept.insert(at, (item_id, ts))
    return tuple(kept[-keep:])
