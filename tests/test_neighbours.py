"""Text neighbours and the co-visit scores items borrow from them (model/neighbours.py)."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.index import CatalogIndex
from stream_app.model.covisit import Choice, CoVisits
from stream_app.model.neighbours import TextLending, TextNeighbours, nearest, smooth


def unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def watched(seed: int, n: int, k: int) -> tuple[np.random.Generator, CatalogIndex, TextNeighbours]:
    """A catalog index of n random items and a table of k neighbours watching it."""
    rng = np.random.default_rng(seed)
    index = CatalogIndex(8)
    table = TextNeighbours(k)
    index.watch(table.changed)
    index.upsert((f"i{n}", v) for n, v in enumerate(unit(rng, n)))
    return rng, index, table


def test_nearest_is_the_brute_force_top_k_without_the_item_itself():
    m = unit(np.random.default_rng(0), 40)
    nb, sim = nearest(m, np.arange(40), 5)
    full = m @ m.T
    np.fill_diagonal(full, -np.inf)
    want = np.argsort(-full, axis=1)[:, :5]
    assert (nb == want).all()
    assert np.allclose(sim, np.take_along_axis(full, want, 1))
    assert (np.diff(sim, axis=1) <= 0).all()  # best first


def test_nearest_with_fewer_items_than_k_pads_with_the_item_at_minus_infinity():
    m = unit(np.random.default_rng(1), 3)
    nb, sim = nearest(m, np.arange(3), 5)
    assert np.isfinite(sim[:, :2]).all() and np.isneginf(sim[:, 2:]).all()
    assert (nb[:, 2:] == np.arange(3)[:, None]).all()
    assert not (nb[:, :2] == np.arange(3)[:, None]).any()
    assert nearest(m[:1], np.arange(1), 3)[1].size == 3  # a lone item: no neighbour


def test_the_table_follows_upserts_changes_and_removals_as_a_full_recompute_would():
    rng, index, table = watched(2, 60, 4)
    table.update(index.matrix)
    for step in range(30):
        kind = step % 3
        if kind == 0:  # a few new items
            index.upsert((f"new{step}-{n}", v) for n, v in enumerate(unit(rng, 2)))
        elif kind == 1:  # an item's text changed
            index.upsert([(index.ids[int(rng.integers(len(index)))], unit(rng, 1)[0])])
        else:  # items removed (the last row moves into the hole)
            index.remove([index.ids[int(rng.integers(len(index)))] for _ in range(2)])
        table.update(index.matrix)
        nb, sim = nearest(index.matrix, np.arange(len(index)), 4)
        assert table.nb.shape == (len(index), 4)
        assert (table.nb == nb).all(), step
        assert np.allclose(table.sim, sim)


def test_update_recomputes_only_what_a_change_can_move():
    rng, index, table = watched(3, 200, 3)
    table.update(index.matrix)
    before = table.nb.copy()
    index.upsert([("far", -index.matrix[0])])  # opposite an item: few rows can change
    table.update(index.matrix)
    changed = (table.nb[:200] != before).any(axis=1)
    assert changed.sum() < 20
    assert len(table.nb) == 201


def test_smooth_lends_a_new_item_its_neighbours_scores_and_a_known_one_little():
    # items 0 and 1 read alike, 2 reads otherwise; only 0 was ever chosen
    index = CatalogIndex(2)
    index.upsert([("a", np.array([1.0, 0.0])), ("a2", np.array([0.96, 0.28])),
                  ("b", np.array([0.0, 1.0]))])
    table = TextNeighbours(1)
    table.update(index.matrix)
    scores = np.array([[2.0, 0.0, 1.0]], np.float32)
    lending = TextLending(weight=1.0, neighbours=1, shrink=5.0, max_items=10)
    out = smooth(scores, table, lending.shares(np.array([100.0, 0.0, 100.0])))
    assert out[0, 1] == pytest.approx(2.0)  # never chosen: its neighbour's score, in full
    assert out[0, 0] == pytest.approx(2.0 + 5 / 105 * 0.0)  # its neighbour a2 scores 0
    # b's nearest (a2) has a positive cosine but scores 0: b keeps its own
    assert out[0, 2] == pytest.approx(1.0)
    half = smooth(scores, table, lending.shares(np.array([100.0, 5.0, 100.0])))
    assert half[0, 1] == pytest.approx(1.0)  # after `shrink` choices: half as much
    off = smooth(scores, table, TextLending(0.0, 1, 5.0, 10).shares(np.zeros(3)))
    assert (off == scores).all()


def test_a_neighbour_with_a_negative_cosine_lends_nothing():
    index = CatalogIndex(2)
    index.upsert([("a", np.array([1.0, 0.0])), ("b", np.array([-1.0, 0.0]))])
    table = TextNeighbours(1)
    table.update(index.matrix)
    out = smooth(np.array([[3.0, 0.0]], np.float32), table,
                 TextLending(1.0, 1, 5.0, 10).shares(np.zeros(2)))
    assert out[0, 1] == 0.0


def test_current_counts_are_faded_to_the_latest_choice():
    cv = CoVisits(half_life=10.0)
    cv.add([Choice(("x",), "a", 0.0), Choice(("x",), "a", 10.0), Choice(("a",), "b", 10.0)])
    counts = cv.current_counts(cv.rows_of(["a", "b", "x", "never"]))
    assert counts == pytest.approx([1.5, 1.0, 0.0, 0.0])


def _catalog(**overrides) -> Catalog:
    s = Settings.from_env({}, covisit_text_neighbours=1, **overrides)
    catalog = Catalog.for_settings(None, "enc", 2, s)  # type: ignore[arg-type]
    catalog.upsert([("a", np.array([1.0, 0.0], np.float32)),
                    ("a2", np.array([0.96, 0.28], np.float32)),
                    ("b", np.array([0.0, 1.0], np.float32)),
                    ("h", np.array([0.6, 0.8], np.float32))])
    catalog.covisits.add([Choice((), "h", 0.5), *[Choice(("h",), "a", 1.0)] * 3])
    return catalog


def test_catalog_scores_lend_below_the_size_limit_and_not_above_it():
    plain = _catalog(covisit_text_weight=0.0).covisit_scores([["h"]])
    assert plain[0, 1] == 0.0 and plain[0, 0] > 0  # a2 was never chosen with h
    lent = _catalog().covisit_scores([["h"]])
    assert lent[0, 1] == pytest.approx(plain[0, 0])  # a2 borrows a's score
    assert (_catalog(covisit_text_max_items=3).covisit_scores([["h"]]) == plain).all()
    assert (_catalog(ann_min_items=4).covisit_scores([["h"]]) == plain).all()


def test_catalog_table_follows_the_catalog():
    catalog = _catalog()
    catalog.covisit_scores([["h"]])
    catalog.remove(["a2"])
    catalog.upsert([("a3", np.array([0.99, 0.14], np.float32))])
    scores = catalog.covisit_scores([["h"]])
    assert catalog.index.ids[-1] == "a3"
    assert scores[0, -1] == pytest.approx(scores[0, catalog.index.row("a")])


@pytest.mark.parametrize("name,value", [("covisit_text_neighbours", 0),
                                        ("covisit_text_shrink", 0.0),
                                        ("covisit_text_weight", -1.0),
                                        ("covisit_text_max_items", -1)])
def test_settings_reject_bad_lending(name, value):
    with pytest.raises(ValueError):
        Settings.from_env({}, **{name: value})


def test_smooth_on_sparse_rows_is_the_dense_weighted_mean_of_the_neighbours():
    rng = np.random.default_rng(4)
    m = unit(rng, 300)
    table = TextNeighbours(6)
    table.update(m)
    scores = np.zeros((5, 300), np.float32)
    for r in range(5):
        cols = rng.choice(300, 40, replace=False)
        scores[r, cols] = rng.random(40)
    counts = rng.integers(0, 20, 300).astype(np.float64)
    lending = TextLending(1.5, 6, 4.0, 1000)
    w = np.maximum(table.sim, 0)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    want = scores + 1.5 * 4.0 / (4.0 + counts) * np.einsum("jk,bjk->bj", w, scores[:, table.nb])
    assert np.allclose(smooth(scores, table, lending.shares(counts)), want, atol=1e-6)
    assert (smooth(np.zeros((2, 300), np.float32), table, lending.shares(counts)) == 0).all()


def test_a_users_item_lends_its_text_neighbours_pairs():
    catalog = _catalog()
    catalog.upsert([("h2", np.array([0.62, 0.785], np.float32))])  # reads like h, never chosen
    plain = _catalog(covisit_text_weight=0.0)
    plain.upsert([("h2", np.array([0.62, 0.785], np.float32))])
    a = catalog.index.row("a")
    assert plain.covisit_scores([["h2"]])[0, a] == 0.0  # h2 was never chosen with anything
    assert catalog.covisit_scores([["h2"]])[0, a] == pytest.approx(
        plain.covisit_scores([["h"]])[0, a])  # h2 reads h's pairs, in full (never chosen)
    # chosen often, an item lends little of its neighbours' pairs
    catalog.covisits.add([Choice((), "h2", 1.0)] * 95)
    assert catalog.covisit_scores([["h2"]])[0, a] < 0.1 * plain.covisit_scores([["h"]])[0, a]


def test_a_much_chosen_users_item_lends_nothing_below_the_minimum_share():
    catalog = _catalog()
    catalog.upsert([("h2", np.array([0.62, 0.785], np.float32))])
    a = catalog.index.row("a")
    catalog.covisits.add([Choice((), "h2", 1.0)] * 10_000)  # 5 / 10,005 of h's pairs: < 1 %
    assert catalog.covisit_scores([["h2"]])[0, a] == 0.0


def test_the_co_visit_rows_follow_the_catalog_and_new_counts():
    catalog = _catalog()
    before = catalog.covisit_scores([["h"]])
    catalog.covisits.add([Choice(("h",), "b", 2.0)] * 3)  # b counted for the first time
    assert catalog.covisit_scores([["h"]])[0, catalog.index.row("b")] > 0
    catalog.remove(["a"])  # the last row moves into a's
    after = catalog.covisit_scores([["h"]])
    assert after.shape[1] == before.shape[1] - 1
    assert after[0, catalog.index.row("b")] > 0


def test_the_table_keeps_no_changes_until_computed_and_after_it_is_cleared():
    rng, index, table = watched(5, 50, 3)
    assert not table._dirty  # nothing computed yet: the first update computes all
    table.update(index.matrix)
    index.upsert([("i0", unit(rng, 1)[0])])
    assert table._dirty == {0}
    table.clear()
    index.upsert([("i1", unit(rng, 1)[0])])
    assert not table._dirty and len(table.nb) == 0
    table.update(index.matrix)
    assert (table.nb == nearest(index.matrix, np.arange(50), 3)[0]).all()


def test_a_catalog_grown_past_the_limit_drops_its_table_and_recomputes_below_it():
    catalog = _catalog(covisit_text_max_items=4)
    catalog.covisit_scores([["h"]])
    assert len(catalog.neighbours.nb) == 4
    catalog.upsert([("c", np.array([0.7, 0.7], np.float32))])  # 5 items: past the limit
    catalog.covisit_scores([["h"]])
    assert len(catalog.neighbours.nb) == 0
    catalog.remove(["c"])
    assert catalog.covisit_scores([["h"]])[0, catalog.index.row("a2")] > 0  # borrows again


def test_a_batch_of_histories_scores_as_each_history_alone():
    """Co-visit scores read every history's rows (its own and those its items' text
    neighbours lend it) for the batch at once: each row of the batch is that history
    scored alone, to the bit, with empty histories, unknown items, repeated items and
    histories longer than the co-visit history among them."""
    rng = np.random.default_rng(9)
    s = Settings.from_env({}, covisit_text_neighbours=4, covisit_history=6)
    catalog = Catalog.for_settings(None, "enc", 8, s)  # type: ignore[arg-type]
    ids = [f"i{n}" for n in range(60)]
    catalog.upsert(list(zip(ids, unit(rng, 60, 8))))
    choices, at = [], 0.0
    for _ in range(40):
        seq = list(rng.choice(ids[:45], int(rng.integers(2, 12))))  # i45.. never chosen
        for n in range(1, len(seq)):
            at += 1.0
            choices.append(Choice(tuple(seq[:n]), seq[n], at))
    catalog.covisits.add(choices + [Choice((), "i0", at)] * 60)
    histories = [list(rng.choice(ids + ["unknown"], int(rng.integers(0, 14))))
                 for _ in range(25)] + [[], ["unknown"], ["i50", "i50"]]
    # a history whose latest items are unknown: its own heaviest item is what a lent
    # row must weigh against, not the batch's (i0, chosen often, lends little)
    histories += [[item, *["unknown"] * 5] for item in ids[:20]]
    batch = catalog.covisit_scores(histories)
    assert batch[:, catalog.index.row("i50")].any()  # lent to a never-chosen item
    for r, history in enumerate(histories):
        assert np.array_equal(batch[r], catalog.covisit_scores([history])[0])
    assert not batch[25].any() and not batch[26].any()  # empty; unknown only
