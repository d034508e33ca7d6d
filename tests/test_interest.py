"""Interest state: event-time decay, event weights, idempotent application, drift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.contract import ActivityEvent
from stream_app.model.interest import (InterestState, apply_event, decay_factor, event_weight,
                                       query_vector)

HL = 3600.0  # one hour half-life
T0 = 1_700_000_000.0
WEIGHTS = Settings().event_weights()


def ev(offset: int, ts: float, kind: str = "click", partition: int = 0, event_id=None,
       rating=None) -> ActivityEvent:
    return ActivityEvent(event_id=event_id or f"e{partition}-{offset}", user_id="u", type=kind,
                         ts=ts, partition=partition, offset=offset, item_id="m", rating=rating)


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


# --- apply_event --------------------------------------------------------------------

def test_first_event():
    s = apply_event(InterestState(), ev(10, T0), vec(1, 2, 0), 2.0, HL, 8)
    np.testing.assert_array_equal(s.vector, vec(2, 4, 0))
    assert s.vector.dtype == np.float32
    assert s.last_ts == T0 and s.n_events == 1
    assert s.offsets == {0: 10} and s.recent_ids == ("e0-10",)


def test_in_order_decay_is_exact():
    e1, e2 = vec(1, 0, 0), vec(0, 1, 1)
    s = apply_event(InterestState(), ev(1, T0), e1, 1.0, HL, 8)
    s = apply_event(s, ev(2, T0 + HL), e2, 2.0, HL, 8)
    np.testing.assert_allclose(s.vector, 0.5 * e1 + 2.0 * e2, rtol=1e-6)
    assert s.last_ts == T0 + HL
    t3 = T0 + HL + 1234.0
    f = decay_factor(1234.0, HL)
    expected = f * s.vector + (-1.5) * vec(1, 1, 0)
    s = apply_event(s, ev(3, t3, "dislike"), vec(1, 1, 0), -1.5, HL, 8)
    np.testing.assert_allclose(s.vector, expected, rtol=1e-6)
    assert s.last_ts == t3 and s.n_events == 3


def test_same_timestamp_adds_without_decay():
    s = apply_event(InterestState(), ev(1, T0), vec(1, 0), 1.0, HL, 8)
    s = apply_event(s, ev(2, T0), vec(0, 1), 1.0, HL, 8)
    np.testing.assert_allclose(s.vector, vec(1, 1), rtol=1e-7)


def test_out_of_order_event_gets_its_own_decay_and_keeps_last_ts():
    a, b = vec(1, 0), vec(0, 1)
    s = apply_event(InterestState(), ev(1, T0 + 2 * HL), a, 1.0, HL, 8)
    late = apply_event(s, ev(2, T0), b, 2.0, HL, 8)  # two half-lives older
    np.testing.assert_allclose(late.vector, a + 2.0 * 0.25 * b, rtol=1e-6)
    assert late.last_ts == T0 + 2 * HL
    assert late.n_events == 2
    # equal to applying the events in time order and decaying to the same moment
    ordered = apply_event(InterestState(), ev(2, T0), b, 2.0, HL, 8)
    ordered = apply_event(ordered, ev(1, T0 + 2 * HL), a, 1.0, HL, 8)
    np.testing.assert_allclose(late.vector, ordered.vector, rtol=1e-6)


def test_apply_does_not_mutate_the_input_state():
    s = apply_event(InterestState(), ev(1, T0), vec(1, 0), 1.0, HL, 8)
    before = s.vector.copy()
    apply_event(s, ev(2, T0 + 10), vec(0, 1), 1.0, HL, 8)
    np.testing.assert_array_equal(s.vector, before)
    assert s.offsets == {0: 1} and s.recent_ids == ("e0-1",) and s.n_events == 1


def test_offsets_per_partition_never_go_back():
    s = InterestState()
    s = apply_event(s, ev(5, T0, partition=0), vec(1), 1.0, HL, 8)
    s = apply_event(s, ev(9, T0 + 1, partition=3), vec(1), 1.0, HL, 8)
    s = apply_event(s, ev(7, T0 + 2, partition=0), vec(1), 1.0, HL, 8)
    assert s.offsets == {0: 7, 3: 9}
    s = apply_event(s, ev(2, T0 + 3, partition=0, event_id="x"), vec(1), 1.0, HL, 8)
    assert s.offsets == {0: 7, 3: 9}
    assert s.recent_ids == ("e0-5", "e3-9", "e0-7", "x")


def test_recent_ids_trimmed_to_dedupe_window():
    s = InterestState()
    for i in range(6):
        s = apply_event(s, ev(i, T0 + i), vec(1), 1.0, HL, 3)
    assert s.recent_ids == ("e0-3", "e0-4", "e0-5")
    assert s.n_events == 6


def test_dedupe_window_zero_remembers_nothing():
    """dedupe_window=0 must not keep every id forever (``t[-0:]`` is the whole tuple)."""
    s = InterestState()
    for i in range(4):
        s = apply_event(s, ev(i, T0 + i), vec(1), 1.0, HL, 0)
    assert s.recent_ids == ()


def test_is_applied_for_replayed_offsets():
    s = apply_event(InterestState(), ev(10, T0, partition=1), vec(1), 1.0, HL, 8)
    assert s.is_applied(ev(10, T0, partition=1, event_id="replayed-under-new-id"))
    assert s.is_applied(ev(3, T0, partition=1, event_id="other"))
    assert not s.is_applied(ev(11, T0, partition=1))
    assert not s.is_applied(ev(10, T0, partition=2))  # same offset, other partition
    assert not InterestState().is_applied(ev(0, T0))


def test_is_applied_for_duplicate_event_id_elsewhere():
    s = apply_event(InterestState(), ev(10, T0, partition=1, event_id="dup"), vec(1), 1.0,
                    HL, 8)
    assert s.is_applied(ev(500, T0, partition=4, event_id="dup"))
    assert s.is_applied(ev(11, T0, partition=1, event_id="dup"))
    assert not s.is_applied(ev(11, T0, partition=1, event_id="fresh"))


def test_duplicate_forgotten_after_window():
    s = InterestState()
    s = apply_event(s, ev(0, T0, partition=0, event_id="old"), vec(1), 1.0, HL, 2)
    s = apply_event(s, ev(1, T0, partition=0, event_id="a"), vec(1), 1.0, HL, 2)
    assert s.is_applied(ev(0, T0, partition=5, event_id="old"))
    s = apply_event(s, ev(2, T0, partition=0, event_id="b"), vec(1), 1.0, HL, 2)
    assert not s.is_applied(ev(0, T0, partition=5, event_id="old"))


# --- query vector and drift ---------------------------------------------------------

def test_query_vector():
    assert query_vector(InterestState()) is None
    zero = InterestState(vector=np.zeros(3, np.float32), last_ts=T0, n_events=1)
    assert query_vector(zero) is None
    s = InterestState(vector=vec(3, 4), last_ts=T0, n_events=1)
    np.testing.assert_allclose(query_vector(s), vec(0.6, 0.8), rtol=1e-6)
    neg = InterestState(vector=vec(0, -2), last_ts=T0, n_events=1)
    np.testing.assert_allclose(query_vector(neg), vec(0, -1))


def test_like_then_dislike_of_same_item_cancels_to_none():
    s = apply_event(InterestState(), ev(1, T0, "like"), vec(1, 0), 1.5, HL, 8)
    s = apply_event(s, ev(2, T0, "dislike"), vec(1, 0), -1.5, HL, 8)
    assert query_vector(s) is None


def test_interest_drifts_to_the_new_genre():
    rng = np.random.default_rng(0)
    dim = 16
    scifi_dir = np.zeros(dim, np.float32); scifi_dir[0] = 1.0
    horror_dir = np.zeros(dim, np.float32); horror_dir[1] = 1.0

    def near(direction):
        v = direction + 0.1 * rng.standard_normal(dim).astype(np.float32)
        return v / np.linalg.norm(v)

    half_life = 7 * 86400.0
    s, t, off = InterestState(), T0, 0
    for _ in range(40):  # a month of heavy sci-fi
        s = apply_event(s, ev(off, t, "like"), near(scifi_dir), WEIGHTS["like"], half_life, 256)
        off += 1
        t += 18 * 3600
    before = query_vector(s)
    assert before @ scifi_dir > 0.9
    t += 21 * 86400  # three weeks of silence
    for _ in range(5):
        s = apply_event(s, ev(off, t, "click"), near(horror_dir), WEIGHTS["click"], half_life,
                        256)
        off += 1
        t += 3600
    after = query_vector(s)
    assert after @ horror_dir > after @ scifi_dir
    assert after @ horror_dir > before @ horror_dir + 0.5
    assert s.n_events == 45
