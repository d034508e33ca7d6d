"""Interest state: event-time decay, event weights, idempotent application, drift."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.contract import ActivityEvent
from stream_app.model.interest import (NO_DECAY, Interest, UserState,
                                       apply_event, decay_factor, event_weight)

HL = 3600.0  # one hour half-life
T0 = 1_700_000_000.0
WEIGHTS = Settings().event_weights()


def ev(offset: int, ts: float, kind: str = "click", partition: int = 0, event_id=None,
       rating=None, topic: str = "activity") -> ActivityEvent:
    return ActivityEvent(event_id=event_id or f"e{partition}-{offset}", user_id="u", type=kind,
                         ts=ts, partition=partition, offset=offset, item_id="m", rating=rating,
                         topic=topic)


def vec(*xs) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


# --- decay and weights --------------------------------------------------------------

def test_decay_factor():
    assert decay_factor(HL, HL) == pytest.approx(0.5, abs=1e-12)
    assert decay_factor(2 * HL, HL) == pytest.approx(0.25, abs=1e-12)
    assert decay_factor(HL / 2, HL) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert decay_factor(0, HL) == 1.0
    assert decay_factor(-5, HL) == 1.0
    assert decay_factor(1e-3, HL) < 1.0
    assert decay_factor(1e9, NO_DECAY) == 1.0


def test_event_weight_plain_types():
    for kind in ("view", "click", "like", "purchase", "search", "text", "dislike", "skip"):
        assert event_weight(ev(0, T0, kind), WEIGHTS, 3.0) == WEIGHTS[kind]
    assert event_weight(ev(0, T0, "dislike"), WEIGHTS, 3.0) == -1.5
    assert event_weight(ev(0, T0, "skip"), WEIGHTS, 3.0) == -0.3


def test_event_weight_rate_scaled_around_neutral():
    w = {"rate": 0.5}
    assert event_weight(ev(0, T0, "rate", rating=5.0), w, 3.0) == 1.0
    assert event_weight(ev(0, T0, "rate", rating=3.0), w, 3.0) == 0.0
    assert event_weight(ev(0, T0, "rate", rating=1.0), w, 3.0) == -1.0
    assert event_weight(ev(0, T0, "rate", rating=4.5), w, 3.0) == 0.75
    assert event_weight(ev(0, T0, "rate", rating=4.5), w, 4.0) == 0.25
    assert event_weight(ev(0, T0, "rate", rating=None), w, 3.0) == 0.0


# --- apply_event: one interest -----------------------------------------------------

DEFAULTS = Settings().interest_params()
P = replace(DEFAULTS, max_interests=3, long_half_life_s=HL, short_half_life_s=HL / 4,
                   short_term_weight=2.0, open_threshold=0.5, dedupe_window=3)
A, B, C, D = (vec(*row) for row in np.eye(4))


def apply(state, e, v, w, p=P, source="src"):
    return apply_event(state, e, v, w, source, p)


def test_first_event_opens_an_interest():
    s = apply(UserState(), ev(0, T0), A, 2.0, source="m1")
    (i,) = s.interests
    np.testing.assert_array_equal(i.vector, 2.0 * A)
    assert (i.long, i.short, i.ts, i.source, i.source_weight) == (2.0, 2.0, T0, "m1", 2.0)
    assert s.last_ts == T0 and s.n_events == 1 and s.offsets == {"activity/0": 0}
    assert s.recent_ids == ("e0-0",)


def test_in_order_event_decays_then_adds_on_both_time_scales():
    s = apply(UserState(), ev(0, T0), A, 1.0)
    near = (A + 0.2 * B) / np.linalg.norm(A + 0.2 * B)
    s = apply(s, ev(1, T0 + HL), near, 1.0, source="m2")
    (i,) = s.interests  # cos(A, near) = 0.98 >= 0.5: joined, not opened
    np.testing.assert_allclose(i.vector, 0.5 * A + near, rtol=1e-6)
    assert i.long == pytest.approx(0.5 + 1.0)
    assert i.short == pytest.approx(1.0 / 16 + 1.0)  # short half-life is HL/4
    assert i.ts == T0 + HL and i.source == "m2"  # 1.0 now beats 0.5 left of m1


def test_out_of_order_event_is_added_with_its_own_decay():
    s = apply(UserState(), ev(0, T0 + HL), A, 1.0, source="new")
    s = apply(s, ev(1, T0), A, 1.0, source="old")
    (i,) = s.interests
    np.testing.assert_allclose(i.vector, 1.5 * A, rtol=1e-6)
    assert i.long == pytest.approx(1.5) and i.ts == T0 + HL and s.last_ts == T0 + HL
    assert i.source == "new"


def test_strength_blends_long_and_short_term_decayed_to_the_query_time():
    i = Interest(A, long=4.0, short=2.0, ts=T0, source="x", source_weight=1.0)
    assert i.strength(T0, P) == pytest.approx(4.0 + 2.0 * 2.0)
    assert i.strength(T0 + HL, P) == pytest.approx(2.0 + 2.0 * 2.0 / 16)


# --- several interests ---------------------------------------------------------------

def test_distant_event_opens_a_new_interest_and_the_weakest_is_replaced_when_full():
    s = apply(UserState(), ev(0, T0), A, 3.0, source="a")
    s = apply(s, ev(1, T0), B, 2.0, source="b")
    s = apply(s, ev(2, T0), C, 1.0, source="c")
    assert [i.source for i in s.interests] == ["a", "b", "c"]
    s = apply(s, ev(3, T0), D, 1.5, source="d")  # full: "c" (strength 1 + 2*1) goes
    assert [i.source for i in s.interests] == ["a", "b", "d"]


def test_negative_event_weakens_what_it_resembles_and_drops_what_it_cancels():
    s = apply(UserState(), ev(0, T0), A, 1.0)
    s = apply(s, ev(1, T0), B, 3.0)
    s = apply(s, ev(2, T0), A, -1.0)  # cosine 1 with A, 0 with B
    assert len(s.interests) == 1 and s.interests[0].long == pytest.approx(3.0)
    half = (B + C) / np.linalg.norm(B + C)  # cosine 0.707 with B
    s = apply(s, ev(3, T0), half, -1.0)
    assert s.interests[0].long == pytest.approx(3.0 - 1 / math.sqrt(2), rel=1e-5)
    assert s.interests[0].vector @ C < 0  # pushed away from what was disliked


def test_no_interests_kept_when_max_is_zero():
    s = apply(UserState(), ev(0, T0), A, 1.0, p=replace(DEFAULTS, max_interests=0))
    assert s.interests == () and s.n_events == 1


def test_drift_new_taste_overtakes_after_a_gap():
    s = UserState()
    for n in range(10):
        s = apply(s, ev(n, T0 + n * 60), A, 1.0)
    later = T0 + 5 * HL
    for n in range(2):
        s = apply(s, ev(10 + n, later + n * 60), B, 1.0)
    strengths = s.strengths(later + 120, P)
    by_dir = {int(np.argmax(i.vector)): st for i, st in zip(s.interests, strengths)}
    assert by_dir[1] > by_dir[0]  # two fresh B events outweigh ten old A ones


# --- bookkeeping --------------------------------------------------------------------

def test_duplicates_are_recognised_by_event_id():
    s = apply(UserState(), ev(5, T0, partition=2), A, 1.0)
    assert s.is_applied(ev(5, T0, partition=2))  # a redelivery
    assert s.is_applied(ev(0, T0, partition=7, event_id="e2-5"))  # same id elsewhere
    assert not s.is_applied(ev(6, T0, partition=2, event_id="fresh"))
    assert not s.is_applied(ev(0, T0, partition=7, event_id="fresh"))


def test_an_unseen_event_below_the_applied_offset_is_not_a_duplicate():
    """After the topic was recreated (offsets start again at 0) or the group's offsets were
    reset, unseen events are applied; ``rewound`` tells the worker to count them."""
    s = apply(UserState(), ev(500, T0, partition=2), A, 1.0)
    again = ev(3, T0 + 1, partition=2, event_id="new-topic-3")
    assert not s.is_applied(again) and s.rewound(again)
    assert not s.rewound(ev(3, T0 + 1, partition=2, event_id="x", topic="other"))
    assert not s.rewound(ev(501, T0 + 1, partition=2, event_id="y"))
    s = apply(s, again, A, 1.0)
    assert s.n_events == 2 and s.offsets == {"activity/2": 500}


def test_offsets_and_recent_ids_are_bounded():
    s = UserState()
    for n in range(5):
        s = apply(s, ev(n, T0 + n, partition=n % 2), A, 1.0)
    assert s.offsets == {"activity/0": 4, "activity/1": 3}
    assert s.recent_ids == ("e0-2", "e1-3", "e0-4")
    assert s.n_events == 5


def test_dedupe_window_zero_remembers_nothing():
    s = apply(UserState(), ev(0, T0), A, 1.0, p=replace(DEFAULTS, dedupe_window=0))
    assert s.recent_ids == ()


def test_latest_chosen_items_are_kept_in_event_time_order():
    """Choices only (not skips), a late event where its time puts it, a re-chosen item
    moves up, the oldest falls out."""
    p = replace(DEFAULTS, recent_items=3)
    s = UserState()
    steps = [("a", 0, "click", ("a",)), ("b", 2, "rate", ("a", "b")),
             ("x", 3, "skip", ("a", "b")), ("c", 1, "view", ("a", "c", "b")),
             ("a", 4, "like", ("c", "b", "a")), ("d", 5, "purchase", ("b", "a", "d"))]
    for n, (item, dt, kind, expected) in enumerate(steps):
        e = ActivityEvent(event_id=f"e{n}", user_id="u", type=kind, ts=T0 + dt, partition=0,
                          offset=n, item_id=item, rating=4.0 if kind == "rate" else None)
        s = apply_event(s, e, A, event_weight(e, WEIGHTS, 3.0), item, p)
        assert s.recent_item_ids() == expected, item
    assert [t for _, t in s.recent_items] == [T0 + 2, T0 + 4, T0 + 5]
    off = apply_event(UserState(), ev(0, T0), A, 1.0, "m", replace(DEFAULTS, recent_items=0))
    assert off.recent_items == ()


def test_an_interests_direction_is_its_unit_vector_computed_once_and_read_only():
    i = Interest(np.array([3.0, 4.0], np.float32), 1.0, 1.0, 0.0, "a", 1.0)
    d = i.direction()
    np.testing.assert_allclose(d, [0.6, 0.8], rtol=1e-6)
    assert i.direction() is d  # cached: a state's interests never change
    with pytest.raises(ValueError):
        d[0] = 1.0  # shared by every caller: nobody may write to it
    zero = Interest(np.zeros(2, np.float32), 0.0, 0.0, 0.0, "a", 0.0)
    assert not zero.direction().any() and zero.direction() is not zero.vector
    moved = replace(i, vector=np.array([0.0, 2.0], np.float32))
    np.testing.assert_allclose(moved.direction(), [0.0, 1.0])


def test_latest_chosen_items_match_a_plain_reference_on_random_streams():
    """In order, late, repeated and tied event times: the kept items are always the
    stream's latest ``keep`` distinct choices, each at its last choice's place, in
    event-time order (ties: in arrival order)."""
    import random

    rnd = random.Random(3)
    for keep in (1, 4, 9):
        p = replace(DEFAULTS, recent_items=keep)
        s, kept = UserState(), []
        for n in range(300):
            item = f"i{rnd.randrange(12)}"
            ts = T0 + n - (rnd.choice([0, 0, 0, 2.5, 7]) if n > 8 else 0) + rnd.choice([0, 0.5])
            e = ActivityEvent(event_id=f"e{n}", user_id="u", type="view", ts=ts,
                              partition=0, offset=n, item_id=item)
            s = apply_event(s, e, A, 1.0, item, p)
            kept = [(i, t) for i, t in kept if i != item]
            at = len(kept)
            while at and kept[at - 1][1] > ts:
                at -= 1
            kept.insert(at, (item, ts))
            kept = kept[-keep:]
            assert s.recent_items == tuple(kept)
