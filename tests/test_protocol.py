"""The judge's slices: events on items and by users with few earlier events."""

from __future__ import annotations

import math

import pytest

from stream_app.evaluation.protocol import NEW_BELOW, judge


def _events(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"event_id": f"e{n}", "user_id": u, "item_id": i} for n, (u, i) in enumerate(pairs)]


def test_new_items_and_new_users_are_counted_at_the_time_of_judging():
    assert NEW_BELOW == 5
    pairs = [("o1", "x"), ("o2", "x"), ("o3", "x"), ("p1", "f"), ("p2", "f"), ("p3", "f"),
             ("p4", "f"),
             ("u", "a"), ("u", "b"), ("u", "c"), ("o4", "x"), ("u", "d"), ("u", "e"),
             ("u", "f"),  # f: 4 earlier events -> new
             ("p5", "f"),  # after u's f: does not make it old for u
             ("o5", "x"), ("u", "x"),  # x: 5 earlier events -> not new; u: 5 before -> not new
             ("o1", "y")]  # o1's first recommendation never arrived
    events = _events(pairs)
    eid = {(u, i): e["event_id"] for (u, i), e in zip(pairs, events, strict=True)}
    recs = {eid["u", "a"]: ["b"], eid["u", "b"]: ["z", "c"], eid["u", "c"]: ["z"],
            eid["u", "d"]: ["e"], eid["u", "e"]: ["f"], eid["u", "f"]: ["q", "r", "x"]}
    j = judge(events, recs)
    third = 1 / math.log2(3)
    # u's b, c, d, e, f, x: hits at 1, 2, -, 1, 1, 3
    assert (j.prequential.n, j.prequential.hits) == (6, 4 + 1)
    assert j.prequential.ndcg == pytest.approx(3 + third + 0.5)
    assert (j.new_items.n, j.new_items.hits) == (5, 4)  # b, c, d, e, f
    assert j.new_items.ndcg == pytest.approx(3 + third)
    assert (j.new_users.n, j.new_users.hits) == (4, 3)  # b, c, d, e (0..3 before; f: 4 before)
    assert j.new_users.ndcg == pytest.approx(2 + third)
    assert (j.leave_one_out.n, j.leave_one_out.hits, j.leave_one_out.ndcg) == (1, 1, 0.5)
    assert j.missing == 1
    d = j.as_dict()
    assert list(d) == ["prequential", "leave_one_out", "new_items", "new_users", "missing"]
    assert d["new_items"] == {"hr@10": 0.8, "ndcg@10": round((3 + third) / 5, 4), "n": 5}
    assert d["new_users"] == {"hr@10": 0.75, "ndcg@10": round((2 + third) / 4, 4), "n": 4}


def test_repeats_count_as_earlier_interactions():
    # the same user on the same item counts for the item; the fifth pick of it is old
    events = _events([("u", "a")] * 6 + [("v", "a")])
    recs = {e["event_id"]: ["a"] for e in events}
    j = judge(events, recs)
    assert j.prequential.n == 5 and j.prequential.hits == 5
    assert j.new_items.n == 4  # u's 2nd..5th (1..4 earlier); u's 6th and v's have 5 and 6
    assert j.new_users.n == 4  # u's 2nd..5th (1..4 before); u's 6th had 5 before, v's 1st unjudged
