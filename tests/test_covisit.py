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


@pytest.mark.parametrize("a", [0.5, 0.8, 1.0])
def test_the_target_exponent_divides_by_the_suggested_items_own_count(a):
    """c[i, j] / (n[i] ** (1 - a) n[j] ** a): with a above 0.5 a popular suggestion loses
    against a rare one chosen with the user's item as often."""
    cv = CoVisits(target_exponent=a)
    # a-b twice, a-c twice; b also chosen alone four times (popular), c never alone
    cv.add([((), "a"), (("a",), "b"), ((), "a"), (("a",), "c"), ((), "a"), (("a",), "b"),
            ((), "a"), (("a",), "c"), *[((), "b")] * 4])
    n = dict(zip(cv.rows, cv.counts))
    assert (n["a"], n["b"], n["c"]) == (4, 6, 2)
    got = cv.scores([["a"]], ["b", "c"])[0]
    np.testing.assert_allclose(got, [2 / (4 ** (1 - a) * 6 ** a), 2 / (4 ** (1 - a) * 2 ** a)],
                               rtol=1e-6)
    assert got[1] > got[0]


@pytest.mark.parametrize("prior", [0.0, 3.0])
def test_the_count_prior_adds_choices_to_every_items_count_in_the_divisor(prior):
    """c[i, j] / ((n[i] + m) ** (1 - a) (n[j] + m) ** a): a pair of rarely chosen items
    loses against a pair as often together among items chosen more; m = 0 is the plain
    similarity."""
    a = 0.8
    cv = CoVisits(target_exponent=a, count_prior=prior)
    # a-b once (each chosen once); c-d four times, c and d also chosen alone twice each
    cv.add([((), "a"), (("a",), "b"), *[((), "c"), (("c",), "d")] * 4,
            ((), "c"), ((), "c"), ((), "d"), ((), "d")])
    n = dict(zip(cv.rows, cv.counts))
    assert (n["a"], n["b"], n["c"], n["d"]) == (1, 1, 6, 6)

    def sim(c, ni, nj):
        return c / ((ni + prior) ** (1 - a) * (nj + prior) ** a)
    got = cv.scores([["a"], ["c"]], ["b", "d"])
    np.testing.assert_allclose(got, [[sim(1, 1, 1), 0], [0, sim(4, 6, 6)]], rtol=1e-6)
    assert (got[0, 0] > got[1, 1]) == (prior == 0)  # the lone pair wins only without it
    # faded counts: the prior is in choices as of the latest one (b and d one half-life
    # later than a and c: the pair as of a, 1; b, 1; a, 1/2 of the latest choice)
    faded = CoVisits(target_exponent=a, count_prior=prior, half_life=100.0)
    faded.add([((), "a", 0.0), (("a",), "b", 100.0, (0.0,))])
    np.testing.assert_allclose(faded.scores([["a"]], ["b"]),
                               [[0.5 / ((0.5 + prior) ** (1 - a) * (1 + prior) ** a)]],
                               rtol=1e-6)
    assert not CoVisits(count_prior=prior).scores([["a"]], ["b"]).any()  # nothing counted


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_counts_fade_with_event_time(monkeypatch, dense_max):
    """A choice half_life seconds older counts half: a-b at t=0, a-c at t=100 with a
    half-life of 100 count 1 and 2; the item counts fade alike."""
    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", dense_max)
    cv = CoVisits(half_life=100.0)
    cv.add([((), "a", 0.0), (("a",), "b", 0.0), ((), "a", 100.0), (("a",), "c", 100.0)])
    n = dict(zip(cv.rows, cv.counts))
    assert (n["a"], n["b"], n["c"]) == (3, 1, 2)
    np.testing.assert_allclose(cv.scores([["a"]], ["b", "c"]),
                               [[1 / math.sqrt(3), 2 / math.sqrt(6)]], rtol=1e-6)
    never = CoVisits()  # the default never fades: both pairs count once
    never.add([((), "a", 0.0), (("a",), "b", 0.0), ((), "a", 100.0), (("a",), "c", 100.0)])
    np.testing.assert_allclose(never.scores([["a"]], ["b", "c"]), [[2 ** -0.5] * 2], rtol=1e-6)


def _timed(stream: list[tuple[tuple[str, ...], str]], times: np.ndarray) -> list[tuple]:
    """The choices with their times and, for each earlier item, when its user chose it."""
    out = []
    last: dict[str, float] = {}  # item -> when it was last chosen (the stream's users share)
    for (previous, item), t in zip(stream, times):
        out.append((previous, item, float(t), tuple(last.get(p, float(t)) for p in previous)))
        last[item] = float(t)
    return out


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_faded_counts_do_not_depend_on_order_start_or_span(monkeypatch, dense_max):
    """Workers that apply the same timed choices in another order, or first saw another
    time, hold the same similarities, also past many half-lives (counts are scaled back
    down, never overflow, and every score stays a bounded similarity); a choice without
    a time counts as of the latest one."""
    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", dense_max)
    rng = np.random.default_rng(7)
    stream = _timed(_stream(12, 300, seed=8), np.linspace(0, 60, 300))  # 60 half-lives
    ids = [f"i{n}" for n in range(12)]
    histories = [list(c[0])[-4:] for c in stream[::9]]
    first = CoVisits(history=4, half_life=1.0)
    first.add(stream)
    assert first.reference is not None and first.reference > 40  # moved while counting
    expected = first.scores(histories, ids)
    assert np.isfinite(first.counts).all() and np.count_nonzero(expected) > 50
    # a pair counts no more than either item's own count: each of 4 items adds at most
    # sqrt(2) (both directions)
    assert expected.max() < 4 * 2
    shuffled = CoVisits(history=4, half_life=1.0)
    shuffled.add([stream[k] for k in rng.permutation(len(stream))])
    np.testing.assert_allclose(shuffled.scores(histories, ids), expected, rtol=1e-4, atol=1e-6)
    later = CoVisits(history=4, half_life=1.0)
    later.add([(p, i, t + 1e6, tuple(x + 1e6 for x in pt)) for p, i, t, pt in stream])
    np.testing.assert_allclose(later.scores(histories, ids), expected, rtol=1e-4, atol=1e-6)
    # the last five choices without their times count as of the latest one timed
    at = stream[-6][2]
    timed, untimed = CoVisits(half_life=1.0), CoVisits(half_life=1.0)
    timed.add(stream[:-5] + [(p, i, at) for p, i, _, _ in stream[-5:]])
    untimed.add(stream[:-5] + [(p, i) for p, i, _, _ in stream[-5:]])
    np.testing.assert_allclose(untimed.scores(histories, ids), timed.scores(histories, ids),
                               rtol=1e-5, atol=1e-7)


def test_a_pair_counts_as_of_its_earlier_choice():
    """b chosen at t=100 after a, which was chosen at t=0 (half-life 100): the pair counts
    as of t=0 (1), not t=100 (2), as a's own count did; without a's time, as of t=100."""
    cv = CoVisits(half_life=100.0)
    cv.add([((), "a", 0.0), (("a",), "b", 100.0, (0.0,))])
    rows = [cv.rows["a"], cv.rows["b"]]
    np.testing.assert_allclose(cv._c.c[np.ix_(rows, rows)], [[0, 1], [1, 0]])
    np.testing.assert_allclose(cv.counts[rows], [1, 2])
    undated = CoVisits(half_life=100.0)
    undated.add([((), "a", 0.0), (("a",), "b", 100.0)])
    np.testing.assert_allclose(undated._c.c[np.ix_(rows, rows)], [[0, 2], [2, 0]])


def test_a_trimmed_choice_counts_as_the_whole_one():
    """What a worker logs for the others (``trimmed``: the latest ``history`` earlier
    items, the chosen one aside, with their times) counts exactly as the choice did."""
    stream = _timed(_stream(15, 200, seed=11), np.linspace(0, 5, 200))
    whole, logged = CoVisits(history=4, half_life=1.0), CoVisits(history=4, half_life=1.0)
    whole.add(stream)
    trimmed = whole.trimmed(stream)
    logged.add(trimmed)
    assert max(len(c.previous) for c in trimmed) == 4 < max(len(c[0]) for c in stream)
    assert all(c.chosen not in c.previous and len(c.previous_at) == len(c.previous)
               for c in trimmed)
    ids = [f"i{n}" for n in range(15)]
    histories = [list(c[0]) for c in stream[::7]]
    np.testing.assert_allclose(logged.scores(histories, ids), whole.scores(histories, ids),
                               rtol=1e-6)
    untimed = whole.trimmed([(("a", "b", "c"), "b")])
    assert untimed == [(("a", "c"), "b", None, None)]


@pytest.mark.parametrize("a, later", [(0.5, 300.0), (0.8, 700.0)])
def test_items_faded_out_of_range_neither_poison_scores_nor_overflow(a, later):
    """An item faded by hundreds of half-lives adds nothing instead of turning a user's
    scores into NaN; an earlier item's time far after the reference (a late event) caps
    at the choice's own weight instead of overflowing."""
    cv = CoVisits(target_exponent=a, half_life=1.0)
    cv.add([((), "a", 0.0), (("a",), "b", 1.0, (0.0,))])
    cv.add([((), "x", later), (("x",), "y", later, (later,))])
    assert 0 < cv.counts[cv.rows["a"]] < 1e-80  # faded, still counted
    scores = cv.scores([["a", "x"]], ["a", "b", "x", "y"])
    assert np.isfinite(scores).all() and scores[0, 3] > 0
    late = CoVisits(half_life=60.0)
    late.add([((), "a", 0.0)])
    late.add([(("b",), "c", 10.0, (70000.0,))])  # b's time 1,000+ half-lives ahead
    rows = [late.rows["b"], late.rows["c"]]
    np.testing.assert_allclose(late._c.c[np.ix_(rows, rows)],
                               [[0, late.counts[rows[1]]], [late.counts[rows[1]], 0]])


def test_catalog_rows_follow_catalog_changes_and_first_counts_as_a_full_read_would():
    from stream_app.catalog import CovisitRows
    from stream_app.index import CatalogIndex

    rng = np.random.default_rng(5)
    index = CatalogIndex(4)
    table = {"co": CoVisits(history=3, keep=100)}
    rows = CovisitRows(index, lambda: table["co"])
    names = [f"i{n}" for n in range(60)]
    for step in range(300):
        op = rng.integers(4)
        if op == 0:  # new items and changed vectors
            picked = rng.choice(names, 3, replace=False)
            index.upsert((str(i), rng.normal(size=4).astype(np.float32)) for i in picked)
        elif op == 1 and len(index):  # removals move the last row into the hole
            index.remove([str(i) for i in rng.choice(list(index.ids), 2)])
        elif op == 2:  # choices, also of items not (yet) in the catalog
            before = tuple(str(i) for i in rng.choice(names, 2, replace=False))
            table["co"].add([(before, str(rng.choice(names)))])
        if step == 150:  # another table altogether
            table["co"] = CoVisits(history=3, keep=100)
        if step % 3 == 0:
            want = table["co"].rows_of(index.ids)
            np.testing.assert_array_equal(rows.rows(), want)
            known, at = rows.known()
            np.testing.assert_array_equal(known, np.flatnonzero(want >= 0))
            np.testing.assert_array_equal(at, want[known])


class _OnePairAtATime(CoVisits):
    """The counting rule as it was written before a batch's pairs were added at once: each
    pair added to the matrix as it is found (the reference the batched ``add`` must equal
    to the bit)."""

    def add(self, choices):
        for choice in map(covisit_module.as_choice, choices):
            previous, chosen, at, previous_at = choice
            weight = self._weight(at)
            col = self._row(chosen)
            self.counts[col] += weight
            since = {} if previous_at is None or math.isinf(self.half_life) \
                else dict(zip(previous, previous_at))
            for back, item_id in enumerate(reversed(self._before(choice))):
                pair = weight
                if item_id in since:
                    pair = self._scale(since[item_id], weight)
                self._c.add([self._row(item_id)], [col], [pair * self.pair_recency ** back],
                            self.backward)


@pytest.mark.parametrize("dense_max", [10_000, 0, 20])
@pytest.mark.parametrize("backward", [1.0, 0.5, 0.0])
def test_a_batch_of_choices_counts_as_one_pair_at_a_time(monkeypatch, dense_max, backward):
    """Batches of timed choices (repeats, the chosen item among the earlier ones, choices
    without times, the reference moved many times, dense grown into sparse at 20 items)
    leave every count and cell equal to the bit to adding one pair at a time; fails if a
    batch's pairs are added in another order, if the pairs before a rebase are not scaled
    down with it, or if those before the switch to sparse rows are not added as float32."""
    monkeypatch.setattr(covisit_module, "DENSE_MAX_ITEMS", dense_max)
    rng = np.random.default_rng(11)
    stream = _timed(_stream(40, 600, seed=12), np.sort(rng.uniform(0, 80, 600)))
    stream = [c if n % 7 else c[:2] for n, c in enumerate(stream)]  # some without times
    stream[5] = (("i1", "i2", "i1"), "i2", stream[5][2])  # repeats, the chosen one before
    kwargs = dict(history=6, recency=0.9, pair_recency=0.7, backward=backward, half_life=1.0)
    batched, single = CoVisits(**kwargs), _OnePairAtATime(**kwargs)
    cuts = sorted(rng.choice(np.arange(1, len(stream)), 40, replace=False))
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        batched.add(stream[start:end])
        single.add(stream[start:end])
    assert batched.reference == single.reference and batched.reference > 60
    assert batched.rows == single.rows
    np.testing.assert_array_equal(batched.counts, single.counts)
    assert type(batched._c) is type(single._c)
    if isinstance(batched._c, covisit_module._Dense):
        np.testing.assert_array_equal(batched._c.c, single._c.c)
        assert np.count_nonzero(batched._c.c) > 100
    else:
        assert batched._c.c == single._c.c and sum(map(len, batched._c.c)) > 100
    ids = list(batched.rows)
    histories = [list(c[0]) for c in stream[::13]]
    np.testing.assert_array_equal(batched.scores(histories, ids), single.scores(histories, ids))
