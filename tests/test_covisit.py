"""Co-visitation counts: exact values on a toy, the history window, the keep-top-M cut, and
the sparse store a large catalog grows into scoring as the dense one does."""

from __future__ import annotations

import math

import numpy as np
import pytest

import stream_app.model.covisit as covisit_module
from stream_app.model.covisit import CoVisits


def _toy(**kwargs) -> CoVisits:
    cv = CoVisits(**kwargs)
    cv.add([((), "a"), (("a",), "b"), (("a", "b"), "c"), (("a",), "b")])
    return cv


def test_counts_and_scores_on_a_toy():
    cv = _toy()
    # chosen: a once, b twice, c once; together: a-b twice, a-c once, b-c once
    assert len(cv) == 3 and list(cv.rows) == ["a", "b", "c"]
    np.testing.assert_array_equal(cv.counts[:3], [1, 2, 1])
    ids = ["a", "b", "c", "not-counted"]
    scores = cv.scores([["a"], ["b"], ["a", "b"], [], ["unknown"]], ids)
    assert scores.shape == (5, 4) and scores.dtype == np.float32
    # c[i, j] / sqrt(n[i] n[j]), summed over the history; an item with itself: 0
    np.testing.assert_allclose(scores[0], [0, 2 / math.sqrt(2), 1, 0], rtol=1e-6)
    np.testing.assert_allclose(scores[1], [2 / math.sqrt(2), 0, 1 / math.sqrt(2), 0], rtol=1e-6)
    np.testing.assert_allclose(scores[2], [math.sqrt(2), math.sqrt(2), 1 + 1 / math.sqrt(2), 0],
                               rtol=1e-6)
    np.testing.assert_array_equal(scores[3:], 0)  # nothing known: no co-visit score
    np.testing.assert_allclose(cv.scores([["a"]], ["c", "a"]), [[1, 0]], rtol=1e-6)  # any order
    assert cv.scores([["a"]], []).shape == (1, 0)
    assert not CoVisits().scores([["a"]], ids).any()  # nothing counted yet


def test_repeats_and_the_chosen_item_itself_are_counted_once():
    cv = CoVisits()
    cv.add([((), "a"), (("a", "b", "a", "c", "a"), "a")])  # b and c once each, a not with a
    row = {i: cv.rows[i] for i in "abc"}
    scores = cv.scores([["b"]], ["a", "b", "c"])
    # a chosen twice, b and c never (they only came before): their rows score nothing
    np.testing.assert_array_equal(cv.counts[[row["a"], row["b"], row["c"]]], [2, 0, 0])
    np.testing.assert_array_equal(scores, 0)
    cv.add([((), "b")])  # now b was chosen once: a-b counted once, n[a] = 2, n[b] = 1
    np.testing.assert_allclose(cv.scores([["b"]], ["a", "c"]), [[1 / math.sqrt(2), 0]],
                               rtol=1e-6)


def test_only_the_latest_history_items_count_and_are_read():
    cv = CoVisits(history=1)
    cv.add([((), "a"), ((), "b"), (("a", "b"), "c")])  # only b, the latest, with c
    np.testing.assert_allclose(cv.scores([["b"], ["a"]], ["c"]), [[1], [0]], rtol=1e-6)
    # reading: only the user's latest item (b, not a)
    np.testing.assert_allclose(cv.scores([["b", "a"], ["a", "b"]], ["c"]), [[0], [1]],
                               rtol=1e-6)


def test_only_each_rows_keep_best_items_get_a_score():
    cv = CoVisits(keep=2)
    cv.add([((), "h")] + [(("h",), "x1")] * 3 + [(("h",), "x2")] * 2 + [(("h",), "x3")])
    ids = ["x3", "x1", "h", "x2"]
    # x1: 3 / sqrt(1 * 3), x2: 2 / sqrt(1 * 2), x3: 1 / sqrt(1 * 1), h: 0
    np.testing.assert_allclose(cv.scores([["h"]], ids), [[0, math.sqrt(3), 0, math.sqrt(2)]],
                               rtol=1e-6)
    wide = CoVisits(keep=100)
    wide.add([((), "h")] + [(("h",), "x1")] * 3 + [(("h",), "x2")] * 2 + [(("h",), "x3")])
    np.testing.assert_allclose(wide.scores([["h"]], ids),
                               [[1, math.sqrt(3), 0, math.sqrt(2)]], rtol=1e-6)
    assert np.count_nonzero(CoVisits(keep=1).scores([["h"]], ids)) == 0  # nothing counted


def _stream(items: int, choices: int, seed: int) -> list[tuple[tuple[str, ...], str]]:
    """Users choosing random items; each choice with the user's earlier ones."""
    rng = np.random.default_rng(seed)
    histories: dict[int, list[str]] = {}
    out = []
    for _ in range(choices):
        user = int(rng.integers(12))
        item = f"i{min(int(rng.integers(items)), int(rng.integers(items)))}"  # some popular
        before = histories.setdefault(user, [])
        out.append((tuple(before[-30:]), item))
        before.append(item)
    return out


def test_growing_past_the_dense_size_gives_the_same_scores(monkeypatch):
    early, late = _stream(8, 200, seed=2), _stream(40, 600, seed=3)  # 8 items, then 40
    dense = CoVisits(history=5, keep=15)
    dense.add(early)
    dense.add(late)
    assert isinstance(dense._c, covisit_module._Dense)

    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", 8)
    grown = CoVisits(history=5, keep=15)
    grown.add(early)
    assert isinstance(grown._c, covisit_module._Dense) and len(grown) == 8
    assert np.count_nonzero(grown._c.c) > 0
    grown.add(late)  # the counts made while dense are carried over
    assert isinstance(grown._c, covisit_module._Sparse) and len(grown) > 8
    ids = [f"i{n}" for n in range(45)]  # 5 never counted
    rng = np.random.default_rng(4)
    histories = [[f"i{int(k)}" for k in rng.integers(42, size=int(rng.integers(0, 9)))]
                 for _ in range(60)]
    expected = dense.scores(histories, ids)
    assert np.count_nonzero(expected) > 100
    np.testing.assert_allclose(grown.scores(histories, ids), expected, rtol=1e-5, atol=1e-6)
    assert (np.count_nonzero(expected, axis=1) <= 15).all()


def test_sparse_from_the_start_scores_as_dense(monkeypatch):
    stream = _stream(30, 400, seed=5)
    dense = CoVisits(history=4)
    dense.add(stream)
    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", 0)
    sparse = CoVisits(history=4)
    sparse.add(stream)
    assert isinstance(sparse._c, covisit_module._Sparse)
    histories = [list(prev) for prev, _ in stream[::7]]
    ids = [f"i{n}" for n in range(30)][::-1]
    np.testing.assert_allclose(sparse.scores(histories, ids), dense.scores(histories, ids),
                               rtol=1e-5, atol=1e-6)
    assert dense._c.c.sum() == pytest.approx(sum(sum(r.values()) for r in sparse._c.c))


def test_recency_weighs_the_latest_history_items_most():
    """With recency r, the item chosen k choices back counts r ** k: history [a, b] scores
    c as 1 * (a-c) * r + 1 * (b-c) (b is the latest); an unknown latest item still takes
    its place in the count."""
    r = 0.5
    cv = _toy(recency=r)
    ids = ["a", "b", "c"]
    plain = _toy().scores([["a", "b"]], ids)[0]
    weighted = cv.scores([["a", "b"]], ids)[0]
    # a-c 1, b-c 1 (cosines 1 and 1/sqrt(2)); a is 1 back, b 0 back
    assert weighted[2] == pytest.approx(r * 1 + 1 / math.sqrt(2), rel=1e-6)
    assert plain[2] == pytest.approx(1 + 1 / math.sqrt(2), rel=1e-6)
    assert cv.scores([["a", "b", "unknown"]], ids)[0][2] == pytest.approx(
        r * r * 1 + r / math.sqrt(2), rel=1e-6)


def test_pair_recency_counts_close_pairs_more():
    """With pair recency p, choosing c after [a, b] counts b-c once (adjacent) and a-c
    p times (two apart), both ways."""
    p = 0.5
    cv = CoVisits(pair_recency=p)
    cv.add([((), "a"), (("a",), "b"), (("a", "b"), "c")])
    ids = ["a", "b", "c"]
    rows = [cv.rows[i] for i in ids]
    c = cv._c.c[np.ix_(rows, rows)]
    np.testing.assert_allclose(c, [[0, 1, p], [1, 0, 1], [p, 1, 0]])
    plain = CoVisits()
    plain.add([((), "a"), (("a",), "b"), (("a", "b"), "c")])
    np.testing.assert_allclose(plain._c.c[np.ix_(rows, rows)], [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_backward_weighs_what_came_before_against_what_came_after(monkeypatch, dense_max):
    """a then b: for a user whose latest is a, b scores fully (it came after a); for one
    whose latest is b, a scores ``backward`` times that (1: order ignored, 0: only what
    users chose next). Dense and sparse counts alike."""
    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", dense_max)
    for backward in (1.0, 0.25, 0.0):
        cv = CoVisits(backward=backward)
        cv.add([((), "a"), (("a",), "b")])  # a chosen once, b once: cosine norm 1
        np.testing.assert_allclose(cv.scores([["a"], ["b"]], ["a", "b"]),
                                   [[0, 1], [backward, 0]], rtol=1e-6)
