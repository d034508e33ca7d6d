"""Top-k selection and the in-memory catalog index."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.index import CatalogIndex
from stream_app.model.ranking import top_k


def ids(hits):
    return [i for i, _ in hits]


# --- top_k ----------------------------------------------------------------------------

def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, -0.2, 0.7],
                       [0.3, -0.1, 0.2, 0.8, 0.0]], dtype=np.float32)
    out = top_k(scores, 3, [[], []])
    assert ids(out[0]) == [1, 4, 2]
    assert ids(out[1]) == [3, 0, 2]
    assert [s for _, s in out[0]] == pytest.approx([0.9, 0.7, 0.5], abs=1e-6)
    assert all(isinstance(i, int) and isinstance(s, float) for i, s in out[0])


def test_top_k_exclusions_per_row():
    scores = np.array([[0.1, 0.9, 0.5, -0.2, 0.7],
                       [0.1, 0.9, 0.5, -0.2, 0.7]], dtype=np.float32)
    out = top_k(scores, 3, [[1], [4, 2, 99, -1]])
    assert ids(out[0]) == [4, 2, 0]
    assert ids(out[1]) == [1, 0, 3]


def test_top_k_does_not_modify_scores():
    scores = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)
    top_k(scores, 2, [[1]])
    np.testing.assert_array_equal(scores, np.array([[0.1, 0.9, 0.5]], dtype=np.float32))


def test_top_k_k_larger_than_available():
    scores = np.array([[0.2, -0.4, 0.6]], dtype=np.float32)
    assert ids(top_k(scores, 10, [[]])[0]) == [2, 0, 1]
    assert ids(top_k(scores, 10, [[0]])[0]) == [2, 1]
    assert ids(top_k(scores, 2, [[0, 0]])[0]) == [2, 1]  # a repeated exclusion counts once


def test_top_k_all_excluded_or_nothing_to_rank():
    scores = np.array([[0.2, 0.4], [0.1, 0.3]], dtype=np.float32)
    assert top_k(scores, 5, [[0, 1], [1]]) == [[], [(0, pytest.approx(0.1))]]
    assert top_k(scores, 0, [[], []]) == [[], []]
    assert top_k(np.zeros((2, 0), np.float32), 3, [[], []]) == [[], []]
    assert top_k(np.zeros((0, 4), np.float32), 3, []) == []


def test_top_k_large_row_matches_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((3, 500)).astype(np.float32)
    excl = [list(range(0, 500, 7)), [], [int(np.argmax(scores[2]))]]
    out = top_k(scores, 20, excl)
    for r in range(3):
        allowed = [i for i in np.argsort(-scores[r]) if i not in set(excl[r])]
        assert ids(out[r]) == [int(i) for i in allowed[:20]]


# --- CatalogIndex -----------------------------------------------------------------

def unit(dim: int, i: int) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    return v


def test_upsert_and_lookup():
    idx = CatalogIndex(4)
    assert len(idx) == 0 and idx.matrix.shape == (0, 4)
    idx.upsert([("a", unit(4, 0)), ("b", unit(4, 1))])
    assert len(idx) == 2 and "a" in idx and "z" not in idx
    assert list(idx.ids) == ["a", "b"]
    np.testing.assert_array_equal(idx.vector("b"), unit(4, 1))
    assert idx.vector("z") is None
    assert idx.matrix.shape == (2, 4)
    assert idx.rows_of(["b", "z", "a", "b"]) == [1, 0, 1]  # held ones only, in order


def test_upsert_updates_in_place():
    idx = CatalogIndex(3)
    idx.upsert([("a", unit(3, 0)), ("b", unit(3, 1))])
    idx.upsert([("a", unit(3, 2))])
    assert len(idx) == 2 and list(idx.ids) == ["a", "b"]
    np.testing.assert_array_equal(idx.vector("a"), unit(3, 2))
    assert ids(idx.rank(unit(3, 2)[None], 1, [[]])[0]) == ["a"]


def test_remove_swaps_last_row_and_keeps_mapping():
    dim = 8
    idx = CatalogIndex(dim)
    names = [f"i{n}" for n in range(dim)]
    idx.upsert((name, unit(dim, n)) for n, name in enumerate(names))
    idx.remove(["i2", "i0", "missing", "i7", "i2"])
    remaining = ["i1", "i3", "i4", "i5", "i6"]
    assert len(idx) == 5 and sorted(idx.ids) == remaining
    assert idx.matrix.shape == (5, dim)
    for name in ("i0", "i2", "i7"):
        assert name not in idx and idx.vector(name) is None
    for name in remaining:
        n = int(name[1:])
        np.testing.assert_array_equal(idx.vector(name), unit(dim, n))
        # ranking with that item's own direction finds exactly it
        hits = idx.rank(unit(dim, n)[None], 1, [[]])[0]
        assert hits == [(name, pytest.approx(1.0))]
    # rows and ids agree
    for row, name in enumerate(idx.ids):
        np.testing.assert_array_equal(idx.matrix[row], unit(dim, int(name[1:])))
    # re-adding a removed id appends it
    idx.upsert([("i0", unit(dim, 0))])
    assert ids(idx.rank(unit(dim, 0)[None], 1, [[]])[0]) == ["i0"]
    assert len(idx) == 6


def test_remove_everything_then_rank():
    idx = CatalogIndex(2)
    idx.upsert([("a", unit(2, 0)), ("b", unit(2, 1))])
    idx.remove(["b", "a"])
    assert len(idx) == 0 and list(idx.ids) == []
    assert idx.rank(unit(2, 0)[None], 3, [[]]) == [[]]
    assert idx.rank(np.zeros((0, 2), np.float32), 3, []) == []


def test_rank_with_exclusions_by_id():
    idx = CatalogIndex(2)
    idx.upsert([("a", np.array([1.0, 0.0], np.float32)),
                ("b", np.array([0.8, 0.6], np.float32)),
                ("c", np.array([0.0, 1.0], np.float32)),
                ("d", np.array([-1.0, 0.0], np.float32))])
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    out = idx.rank(q, 3, [["a", "unknown"], []])
    assert ids(out[0]) == ["b", "c", "d"]
    assert [s for _, s in out[0]] == pytest.approx([0.8, 0.0, -1.0], abs=1e-6)
    assert ids(out[1]) == ["c", "b", "a"]
    assert ids(idx.rank(q[:1], 10, [{"a", "b", "c", "d"}])[0]) == []
    assert ids(idx.rank(q[:1], 10, [("d",)])[0]) == ["a", "b", "c"]


def test_growth_beyond_64_rows():
    dim = 100
    idx = CatalogIndex(dim)
    idx.upsert((f"x{n}", unit(dim, n)) for n in range(40))
    idx.upsert((f"x{n}", unit(dim, n)) for n in range(40, 100))
    assert len(idx) == 100 and idx.matrix.shape == (100, dim)
    for n in (0, 39, 63, 64, 65, 99):
        np.testing.assert_array_equal(idx.vector(f"x{n}"), unit(dim, n))
    q = np.stack([unit(dim, 70), unit(dim, 5)])
    out = idx.rank(q, 1, [[], []])
    assert [ids(h) for h in out] == [["x70"], ["x5"]]
    idx.remove([f"x{n}" for n in range(0, 100, 2)])
    assert len(idx) == 50
    for n in range(1, 100, 2):
        np.testing.assert_array_equal(idx.vector(f"x{n}"), unit(dim, n))
    assert ids(idx.rank(unit(dim, 77)[None], 1, [[]])[0]) == ["x77"]


# --- interest-share blending ----------------------------------------------------------

from stream_app.model.ranking import blend, quotas  # noqa: E402


def test_quotas_split_k_by_share_with_largest_remainder():
    assert quotas(np.array([3.0, 1.0]), 10).tolist() == [8, 2]  # 7.5/2.5: tie goes first
    assert quotas(np.array([1.0, 1.0, 1.0]), 10).tolist() == [4, 3, 3]
    assert quotas(np.array([0.0, 5.0]), 4).tolist() == [0, 4]
    assert quotas(np.array([0.0, 0.0]), 4).tolist() == [0, 0]
    assert quotas(np.array([2.0, 1.0, 1.0]), 10).sum() == 10


def test_each_interest_fills_its_share_with_its_own_best_items():
    # items 0-4 belong to interest 0, items 5-9 to interest 1
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
                       [0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.3, 0.2, 0.15, 0.12]])
    out = blend(scores, np.array([3.0, 1.0]), scores.max(axis=0), k=4, exclude=[])
    assert [(i, g) for i, _, g in out] == [(0, 0), (1, 0), (2, 0), (5, 1)]
    out = blend(scores, np.array([1.0, 1.0]), scores.max(axis=0), k=4, exclude=[0])
    assert sorted(i for i, _, _ in out) == [1, 2, 5, 6]
    assert [s for _, s, _ in out] == sorted((s for _, s, _ in out), reverse=True)


def test_no_interest_means_the_fallback_ranking():
    prior = np.array([0.1, 0.9, 0.5, 0.7])
    out = blend(np.zeros((0, 4)), np.zeros(0), prior, k=2, exclude=[1])
    assert out == [(3, pytest.approx(0.7), -1), (2, pytest.approx(0.5), -1)]


def test_a_short_catalog_gives_a_shorter_list():
    scores = np.array([[0.9, 0.8, 0.1, 0.2]])
    out = blend(scores, np.array([1.0]), np.array([0.0, 0.0, 0.3, 0.6]), k=4, exclude=[0])
    assert len(out) == 3 and {i for i, _, _ in out} == {1, 2, 3}
    assert not blend(scores, np.array([1.0]), scores[0], k=3, exclude=[0, 1, 2, 3])


def test_best_indices_are_the_full_partitions_best():
    """The block-maximum shortcut picks the same entries as a full argpartition, on long
    and short rows, with barred (-inf) entries, with fewer finite entries than wanted,
    and for rows sorted either way (the bound's worst cases)."""
    from stream_app.model.ranking import best_indices

    rng = np.random.default_rng(7)
    rows = [rng.random(n).astype(np.float32) for n in (5, 300, 10_000, 12_345)]
    rows.append(np.sort(rng.random(10_000)).astype(np.float32))
    rows.append(np.sort(rng.random(10_000))[::-1].astype(np.float32))
    barred = rng.random(10_000).astype(np.float32)
    barred[rng.choice(10_000, 9_000, replace=False)] = -np.inf
    rows.append(barred)
    few = np.full(10_000, -np.inf, np.float32)
    few[[3, 500, 9_999]] = [0.1, 0.7, 0.4]
    rows.append(few)
    for row in rows:
        for want in (1, 10, 37):
            want = min(want, len(row))
            got = best_indices(row, want)
            expected = np.argpartition(-row, want - 1)[:want]
            assert len(got) == want == len(set(got.tolist()))
            assert sorted(row[got].tolist()) == sorted(row[expected].tolist())
    assert set(best_indices(few, 3).tolist()) == {3, 500, 9_999}


def _blend_one_take_at_a_time(scores, shares, fallback, k, exclude):
    """The earlier ``blend``: every take masks the whole row anew (the reference)."""
    n_items = len(fallback)
    barred = np.zeros(n_items, dtype=bool)
    barred[[i for i in exclude if 0 <= i < n_items]] = True
    taken = []
    slots = quotas(shares, k) if len(shares) else np.zeros(0, dtype=int)

    def take(row, n, interest):
        masked = np.where(barred, -np.inf, row)
        order = np.argsort(-masked, kind="stable")
        for i in order:
            if n <= 0 or not np.isfinite(masked[i]):
                break
            taken.append((int(i), float(row[i]), interest))
            barred[i] = True
            n -= 1

    for interest in np.argsort(-np.asarray(shares), kind="stable"):
        take(scores[interest], int(slots[interest]), int(interest))
    take(fallback, k - len(taken), -1)
    return sorted(taken, key=lambda t: -t[1])


def test_lists_equal_the_lists_of_masking_the_row_for_every_take():
    """Masking a user's excluded items once and skipping the items earlier interests took
    gives the same lists as masking every row before each take, on short and long
    catalogs (the block-maximum path), with exclusions out of range, barred (-inf)
    scores, more slots than items, and no strength left."""
    from stream_app.model.ranking import rank_interests

    rng = np.random.default_rng(11)
    for case in range(300):
        n_items = int(rng.choice([3, 12, 40, 700, 5_000]))
        m = int(rng.integers(0, 5))
        k = int(rng.choice([1, 5, 10, 30]))
        sims = rng.standard_normal((m, n_items)).astype(np.float32)
        prior = rng.random(n_items).astype(np.float32)
        if case % 7 == 0:
            prior[rng.random(n_items) < 0.3] = -np.inf
        strengths = rng.random(m) * (case % 5 != 0)
        exclude = rng.integers(-3, n_items + 3, size=int(rng.integers(0, n_items))).tolist()
        scores = sims + prior[None, :]
        fallback = scores.max(axis=0) if strengths.sum() > 0 else prior
        expected = _blend_one_take_at_a_time(scores, strengths, fallback, k, exclude)
        assert rank_interests(sims, strengths, prior, k, exclude) == expected
        assert blend(scores, strengths, fallback, k, exclude) == expected
