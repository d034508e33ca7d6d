"""Rankers: streaming item-kNN, decayed popularity and SASRec, replayed and judged like the pipeline."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.evaluation.baselines import DecayedPopularity, ItemKNN, SASRec, replay_ranker
from stream_app.evaluation.protocol import judge
from stream_app.model.sequence import SequenceParams

ITEMS = ["A", "B", "C", "D", "E"]


def _ev(n: int, user: str, item: str, ts: float | None = None) -> dict:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "rating": 4.0,
            "ts": float(n if ts is None else ts)}


def _stream(pairs: list[tuple[str, str]]) -> list[dict]:
    return [_ev(n, u, i) for n, (u, i) in enumerate(pairs)]


@pytest.mark.parametrize("dense_max", [10_000, 0])  # dense matrix, then the sparse fallback
def test_item_knn_recommends_what_followed_the_same_item(dense_max, monkeypatch):
    monkeypatch.setattr("stream_app.model.covisit.DENSE_MAX_ITEMS", dense_max)
    knn = ItemKNN(ITEMS)
    for event in _stream([("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"),
                          ("u3", "C"), ("u3", "D"), ("u4", "E"), ("u5", "E"), ("u6", "E"),
                          ("new", "A")]):
        knn.learn_one(event)
    # B co-occurs with A (cosine 2 / sqrt(3 * 2)); nothing else does: popularity fills (E: 3)
    assert knn.rank("new", 3) == ["B", "E", "C"]
    assert knn.scores("new")[knn.catalog.row["B"]] == pytest.approx(2 / math.sqrt(3 * 2))
    assert knn.rank("u1", 10) == ["E", "C", "D"]  # seen items never come back
    assert knn.rank("nobody", 2) == ["A", "E"]  # no history: popularity, ties by catalog


def test_item_knn_cosine_and_history_window():
    knn = ItemKNN(ITEMS, history=2)
    for event in _stream([("u", "A"), ("u", "B"), ("u", "C"), ("v", "C"), ("v", "D")]):
        knn.learn_one(event)
    c = knn.covisits._c.c  # type: ignore[union-attr]
    row = knn.covisits.rows
    # u's C co-occurs with its previous two (A, B); A-B once; v adds C-D
    assert c[row["A"], row["B"]] == c[row["B"], row["A"]] == 1
    assert c[row["C"], row["A"]] == c[row["C"], row["B"]] == c[row["C"], row["D"]] == 1
    assert c[row["A"], row["D"]] == 0 and c.trace() == 0
    # v's last two are C, D: A scores 1/sqrt(1*2) via C; B the same; ties by catalog order
    assert knn.rank("v", 2) == ["A", "B"]
    knn.learn_one(_ev(9, "w", "D"))
    knn.learn_one(_ev(10, "w", "E"))
    # w's history D, E: C scores 1/sqrt(2 * 2) via D, nothing via E; A, B score 0
    assert knn.rank("w", 1) == ["C"]


def test_item_knn_keeps_its_rows_in_step_as_items_are_first_chosen():
    rng = random.Random(3)
    items = [f"i{n}" for n in range(40)]
    knn = ItemKNN(items, history=5)
    for n in range(400):
        knn.learn_one(_ev(n, f"u{rng.randrange(15)}", rng.choice(items[: 10 + n // 10])))
        user = f"u{rng.randrange(15)}"
        recent = knn.recent.get(user)
        fresh = (knn.covisits.scores([tuple(recent)], knn.catalog.ids)[0] if recent
                 else np.zeros(len(items)))
        np.testing.assert_array_equal(knn.scores(user), fresh)


def test_replayed_rankers_are_judged_like_the_pipeline():
    # everyone goes A -> B -> C; each next choice is what item-kNN puts first
    events = _stream([(u, i) for u in ("u1", "u2", "u3") for i in "ABC"])
    recs = replay_ranker(ItemKNN(ITEMS), events, k=10)
    assert set(recs) == {e["event_id"] for e in events}
    assert recs["e3"][0] == "B" and recs["e4"][0] == "C"  # u2, after A, then after A, B
    j = judge(events, recs)
    assert j.prequential.n == 6 and j.leave_one_out.n == 3 and j.missing == 0
    # u1 learns nothing from the past: B after A is a popularity guess at rank 1 (only A
    # was picked, B..E tie at 0, catalog order), then C at rank 1 again: all six hit at 1
    assert j.prequential.hits == 6 and j.prequential.ndcg == pytest.approx(6.0)


def test_decayed_popularity_decays_in_event_time():
    day = 86400.0
    pop = DecayedPopularity(ITEMS, half_life_s=day)
    for n, (item, ts) in enumerate([("A", 0.0), ("A", 0.0), ("A", 0.0), ("B", 2 * day),
                                    ("B", 2 * day)]):
        pop.learn_one(_ev(n, f"u{n}", item, ts))
    # A: 3 * 2^-2 = 0.75 now, B: 2
    assert pop.rank("x", 3) == ["B", "A", "C"]
    assert pop.rank("u3", 2) == ["A", "C"]  # u3 saw B
    pop.learn_one(_ev(9, "y", "C", 1e9))  # far later: the origin moves, nothing overflows
    assert pop.rank("x", 1) == ["C"] and all(math.isfinite(s) for s in pop.scores)


def test_unknown_items_are_ignored():
    knn = ItemKNN(ITEMS)
    knn.learn_one(_ev(0, "u", "Z"))
    knn.learn_one(_ev(1, "u", "A"))
    assert knn.rank("u", 10) == ["B", "C", "D", "E"]


def _sasrec_params(epochs: float) -> SequenceParams:
    return replace(Settings.from_env({}).sequence_params(), length=4, dim=16, epochs=epochs,
                   dropout=0.0, lr=0.01, batch_size=16)


def test_sasrec_streaming_knows_only_what_its_last_retraining_saw():
    # everyone goes A -> B -> C -> D; E never follows anything
    pairs = [(f"u{n}", i) for n in range(12) for i in "ABCD"]
    model = SASRec(ITEMS, _sasrec_params(40), every=len(pairs))
    for event in _stream(pairs[:-1]):
        model.learn_one(event)
        assert model.rank(event["user_id"], 3) == []  # not retrained yet: nothing to rank
    model.learn_one(_stream(pairs)[-1])  # the 48th event: retrained on all of them
    model.learn_one(_ev(99, "new", "A"))
    assert model.rank("new", 1) == ["B"]
    model.learn_one(_ev(100, "new", "B"))
    assert model.rank("new", 1) == ["C"] and "A" not in model.rank("new", 4)


def test_sasrec_trained_before_the_stream_ranks_from_the_first_event():
    train = _stream([(f"u{n}", i) for n in range(12) for i in "ABCD"])
    model = SASRec(ITEMS, _sasrec_params(40), train_on=train)
    model.learn_one(_ev(0, "x", "B"))
    assert model.rank("x", 1) == ["C"]
