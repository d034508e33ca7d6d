"""The one scoring function: a score's parts, weighed by a version's blend; the blend fitted
on held-out choices; NDCG."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.model.adapter import Adapter, Blend
from stream_app.model.scoring import (
    BLEND_GRID,
    Defaults,
    Parts,
    _pools,
    fit_blend,
    judged,
    parts,
    rank_parts,
)
from stream_app.model.sequence import Window, fit_sequence

NONE = Defaults(popularity=0.0, covisit=0.0, interest=1.0, fitted=(), margin=1.0, sequence=1.0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible fits


def _one_row(n: int = 6) -> Parts:
    """One user without interests: the sequence model likes item 0, the prior item 1,
    co-visits item 2."""
    sequence = np.zeros((1, n), np.float32)
    sequence[0, 0] = 5.0
    prior = np.zeros(n, np.float32)
    prior[1] = 4.0
    covisit = np.zeros((1, n), np.float32)
    covisit[0, 2] = 3.0
    return Parts(sequence, prior, np.zeros((0, n), np.float32), [0], covisit)


def _rank(p: Parts, blend: Blend, k: int, defaults: Defaults = NONE,
          excludes: list | None = None, strengths: list | None = None) -> list:
    strengths = strengths or [np.ones(m, np.float64) for m in p.counts]
    return rank_parts(p, blend, defaults, strengths, excludes or [[] for _ in p.counts], k)


def _rows(ranked: list) -> list[int]:
    return [row for row, _, _ in ranked]


def test_every_part_counts_by_its_weight_and_a_zero_weight_removes_it():
    p = _one_row()
    (ranked,) = _rank(p, Blend(2.0, 1.0, 0.5, 1.0), 3)
    assert ranked == [(0, 10.0, -1), (2, 3.0, -1), (1, 2.0, -1)]  # 2 * 5, 1 * 3, 0.5 * 4
    assert _rows(_rank(p, Blend(1.0, 1.0, 1.0, 1.0), 3)[0]) == [0, 1, 2]
    assert _rows(_rank(p, Blend(0.0, 1.0, 1.0, 1.0), 2)[0]) == [1, 2]  # no sequence
    assert _rows(_rank(p, Blend(1.0, 1.0, 0.0, 1.0), 2)[0]) == [0, 2]  # no popularity
    assert _rows(_rank(p, Blend(1.0, 1.0, 1.0, 0.0), 2)[0]) == [0, 1]  # no co-visits
    # a blend that fitted none of them: the settings' weights
    assert _rows(_rank(p, Blend(1.0, 1.0), 2)[0])[:1] == [0]
    assert _rank(p, Blend(1.0, 1.0), 2, Defaults(2.0, 0.0, 1.0, (), 1.0, 1.0))[0] == [
        (1, 8.0, -1), (0, 5.0, -1)]
    assert _rank(p, Blend(1.0, 1.0, None, 0.0), 1, Defaults(0.0, 9.0, 1.0, (), 1.0, 1.0))[0] \
        == [(0, 5.0, -1)]  # a fitted weight wins over the default
    # no sequence model (the plain encoder): the sequence weight plays no part
    plain = replace(p, sequence=None)
    assert _rank(plain, Blend(8.0, 1.0, 1.0, 1.0), 2)[0] == [(1, 4.0, -1), (2, 3.0, -1)]
    # one prior for every row, or each row its own
    two = Parts(None, np.array([[0, 1, 0], [1, 0, 0]], np.float32), np.zeros((0, 3)), [0, 0],
                np.zeros((2, 3), np.float32))
    assert [r[0][0] for r in _rank(two, Blend(), 1, Defaults(1.0, 0.0, 1.0, (), 1.0, 1.0))] == [1, 0]


def test_excluded_rows_never_appear():
    p = _one_row()
    for k in (1, 3, 6, 10):
        (ranked,) = _rank(p, Blend(), k, excludes=[[0, 2]])
        assert not {0, 2} & set(_rows(ranked)) and len(ranked) == min(k, 4)
    p = Parts(None, np.zeros(4, np.float32), np.eye(4, dtype=np.float32)[:2], [2],
              np.zeros((1, 4), np.float32))
    (ranked,) = _rank(p, Blend(), 4, excludes=[[0, 1, 3]])
    assert _rows(ranked) == [2]  # the interests' favourites excluded too


def test_interests_fill_their_share_of_the_list():
    n = 8
    sims = np.zeros((3, n), np.float32)
    sims[0, :4] = [1.0, 0.9, 0.8, 0.7]  # row 0, interest 0: items 0..3
    sims[1, 7] = 1.0  # row 0, interest 1: item 7
    sims[2, 5] = 1.0  # row 2, its only interest: item 5
    prior = np.zeros(n, np.float32)
    prior[[3, 4, 5, 6]] = [0.1, 0.4, 0.3, 0.2]
    p = Parts(None, prior, sims, [2, 0, 1], np.zeros((3, n), np.float32))
    strengths = [np.array([3.0, 1.0]), np.zeros(0), np.array([1.0])]
    first, second, third = _rank(p, Blend(1.0, 1.0, 1.0, 0.0), 4, strengths=strengths)
    # 3 : 1 by strength; each interest its own best; every item says where it came from
    assert sorted((row, interest) for row, _, interest in first) == [
        (0, 0), (1, 0), (2, 0), (7, 1)]
    assert [interest for _, _, interest in second] == [-1] * 4  # no interest: the prior
    assert _rows(second) == [4, 5, 6, 3]
    assert third[0][:1] == (5,) and third[0][2] == 0
    assert [s for _, s, _ in first] == sorted((s for _, s, _ in first), reverse=True)
    # the interests weigh nothing: the prior ranks, whichever interest takes each slot
    first, _, third = _rank(p, Blend(1.0, 0.0, 1.0, 0.0), 4, strengths=strengths)
    assert set(_rows(first)) == set(_rows(third)) == {3, 4, 5, 6}


def test_parts_are_the_sequence_logits_the_cosines_and_the_given_priors():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(10, 4)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    ids = [f"i{n}" for n in range(10)]
    interests = [text[[1, 2]], np.zeros((0, 4), np.float32), text[[5]]]
    covisit = rng.random((3, 10)).astype(np.float32)
    prior = rng.random(10).astype(np.float32)
    base = parts(Adapter.base("enc"), text, text, prior, interests, [[0], [], [3, 4]], covisit)
    assert base.sequence is None and list(base.counts) == [2, 0, 1]
    np.testing.assert_allclose(base.sims, text[[1, 2, 5]] @ text.T, atol=1e-6)
    np.testing.assert_array_equal(base.prior, prior)
    np.testing.assert_array_equal(base.covisit, covisit)

    params = replace(Settings().sequence_params(), length=4, dim=8, blocks=1, heads=1,
                     dropout=0.0, epochs=1.0, batch_size=2)
    weights, _ = fit_sequence(None, [Window((0, 1, 2)), Window((3, 4))], ids, text, params)
    trained = Adapter("enc+ft1", "enc", weights)
    ranking = trained.item_vectors(ids, text)
    p = parts(trained, text, ranking, prior, interests, [[0], [], [3, 4]], covisit)
    queries = trained.sequence_queries([[0], [], [3, 4]], ranking)
    np.testing.assert_allclose(p.sequence, queries @ ranking.T, atol=1e-5)
    np.testing.assert_array_equal(p.sequence[1], 0)  # no history: no sequence score
    np.testing.assert_allclose(p.sims, base.sims, atol=1e-6)  # cosines in the text space
    # a version served with sequence weight 0 does not run its model
    skipped = parts(trained, text, ranking, prior, interests, [[0], [], [3, 4]], covisit,
                    with_sequence=False)
    assert skipped.sequence is None
    np.testing.assert_array_equal(skipped.sims, p.sims)
    zero = replace(trained, blend=Blend(0.0, 1.0, 0.5, 1.0))
    assert trained.ranks_by_sequence and not zero.ranks_by_sequence
    assert not Adapter.base("enc").ranks_by_sequence
    d = Defaults(0.5, 1.0, 1.0, (), 1.0, 0.0)
    strengths = [np.ones(m) for m in p.counts]
    assert (rank_parts(skipped, zero.blend, d, strengths, [[], [], []], 5)
            == rank_parts(p, zero.blend, d, strengths, [[], [], []], 5))

    empty = parts(trained, np.zeros((0, 4), np.float32), np.zeros((0, 8), np.float32),
                  np.zeros(0, np.float32), interests, [[], [], []], np.zeros((3, 0)))
    assert empty.sequence is None and empty.sims.shape == (3, 0)


@pytest.mark.parametrize("informative", ["sequence", "interest", "covisit", "popularity"])
def test_the_fitted_blend_weighs_an_informative_part_and_drops_noise(informative):
    """One part points at the held-out choice (through noise); the others each at a random
    other item, loudly: any weight on them costs, none helps. The sequence weight is
    fitted like the others (a useless sequence model is weighed out)."""
    names = ("sequence", "interest", "covisit", "popularity")
    rng = np.random.default_rng(names.index(informative) + 1)
    rows, n = 200, 50
    positives = rng.integers(n, size=rows)

    def part(name: str) -> np.ndarray:
        if name == informative:
            out = 0.3 * rng.normal(size=(rows, n))
            out[np.arange(rows), positives] += 1.0
        else:
            out = np.zeros((rows, n))
            out[np.arange(rows), (positives + rng.integers(1, n, size=rows)) % n] = 10.0
        return out.astype(np.float32)

    parts_ = {name: part(name) for name in names}
    p = Parts(parts_["sequence"], parts_["popularity"], parts_["interest"], [1] * rows,
              parts_["covisit"])
    strengths = [np.ones(1)] * rows
    excludes = [[] for _ in range(rows)]
    blend = fit_blend(p, strengths, excludes, list(positives), Blend(1.0, 1.0, 1.0, 1.0))
    weights = vars(blend)
    assert weights[informative] > 0 and weights[informative] in BLEND_GRID, blend
    assert all(weights[name] == 0.0 for name in names if name != informative), blend

    def gain(b: Blend) -> float:
        return judged(rank_parts(p, b, NONE, strengths, excludes, 10), list(positives))[1]

    assert gain(blend) > 0.8 and gain(Blend(1.0, 1.0, 1.0, 1.0)) < 0.6


def test_ndcg_counts_one_relevant_row_by_its_rank():
    lists = [[(3, 0.0, -1), (1, 0.0, -1)], [(0, 0.0, -1)], [], [(n, 0.0, -1) for n in range(11)]]
    assert judged(lists[:1], [3])[1] == 1.0
    assert judged(lists, [1, 5, 2, 10])[1] == pytest.approx((1 / math.log2(3)) / 4)  # 10: 11th
    assert judged(lists[3:], [10], k=11)[1] == pytest.approx(1 / math.log2(12))
    assert judged([], [])[1] == 0.0


def test_the_blend_search_pools_hold_each_parts_best_and_the_positive():
    """Ranked by one part alone, a row's top 10 over its pool is its top 10 over the whole
    catalog (the pool holds every part's best); the positive is in its pool; padding
    and excluded items never come back."""
    rng = np.random.default_rng(5)
    rows, n = 30, 400
    counts = list(rng.integers(1, 4, size=rows))
    p = Parts(rng.normal(size=(rows, n)).astype(np.float32),
              rng.random((rows, n)).astype(np.float32),
              rng.normal(size=(sum(counts), n)).astype(np.float32), counts,
              np.where(rng.random((rows, n)) < 0.05, rng.random((rows, n)), 0).astype(np.float32))
    excludes = [list(rng.integers(0, n, size=20)) for _ in range(rows)]
    positives = [int(rng.integers(n)) for _ in range(rows)]
    positives = [x if x not in ex else (x + 1) % n for x, ex in zip(positives, excludes)]
    sub, pads, mapped = _pools(p, excludes, positives, 15)
    strengths = [np.ones(c) for c in counts]
    assert sub.prior.shape[1] < n
    for blend in (Blend(1.0, 0.0, 0.0, 0.0), Blend(0.0, 0.0, 1.0, 0.0),
                  Blend(0.0, 0.0, 0.0, 1.0)):
        full = rank_parts(p, blend, NONE, strengths, excludes, 10)
        pooled = rank_parts(sub, blend, NONE, strengths, pads, 10)
        for r in range(rows):
            assert [round(s, 5) for _, s, _ in pooled[r]] == [round(s, 5) for _, s, _ in full[r]]
    for r in range(rows):  # the positive's scores come along with it
        assert sub.prior[r, mapped[r]] == p.prior[r, positives[r]]
        assert sub.covisit[r, mapped[r]] == p.covisit[r, positives[r]]


def test_the_blend_keeps_the_settings_weights_when_no_change_is_clearly_better():
    """Parts that know nothing about the choices: grid points win on noise, but no move
    beats the start by the margin (here 3 standard errors, the default's 1 lets about
    one noise move in six through), so the start is kept."""
    rng = np.random.default_rng(11)
    rows, n = 300, 60
    noise = lambda: rng.normal(size=(rows, n)).astype(np.float32)  # noqa: E731
    p = Parts(noise(), noise(), noise(), [1] * rows, noise())
    start = Blend(1.0, 1.0, 0.5, 1.0)
    args = (p, [np.ones(1)] * rows, [[] for _ in range(rows)],
            list(rng.integers(n, size=rows)), start)
    assert fit_blend(*args, margin=3.0) == start
    assert fit_blend(*args, margin=0.0) != start  # without the margin it chases the noise


def test_the_blend_fits_only_the_weights_it_is_told_to():
    """With an informative interest part, fitting only the sequence weight leaves the
    interest, co-visit and popularity weights at the start's (the settings') values;
    an unknown name is refused."""
    rng = np.random.default_rng(3)
    rows, n = 200, 50
    positives = rng.integers(n, size=rows)
    informative = rng.normal(size=(rows, n)).astype(np.float32)
    informative[np.arange(rows), positives] += 4.0
    noise = lambda: rng.normal(size=(rows, n)).astype(np.float32)  # noqa: E731
    p = Parts(noise(), noise(), informative, [1] * rows, noise())
    start = Blend(1.0, 0.25, 0.5, 1.0)
    args = (p, [np.ones(1)] * rows, [[] for _ in range(rows)], list(positives), start)
    every = fit_blend(*args)
    assert every.interest != 0.25  # with all four fitted the interest weight moves
    only = fit_blend(*args, names=("sequence",))
    assert (only.interest, only.popularity, only.covisit) == (0.25, 0.5, 1.0)
    assert only.sequence == 0.0  # the noise sequence part is weighed out
    with pytest.raises(ValueError, match="unknown blend weights"):
        fit_blend(*args, names=("sequence", "typo"))


def test_settings_weights_fill_what_a_blend_leaves_open():
    d = Defaults(popularity=0.5, covisit=2.0, interest=0.0, fitted=("sequence",), margin=1.0,
                 sequence=1.0)
    assert d.weights(Blend()) == Blend(1.0, 0.0, 0.5, 2.0)
    assert d.weights(Blend(0.5, 3.0, 1.0, 0.0)) == Blend(0.5, 3.0, 1.0, 0.0)
    # interest weight 0 (the ID-only ablation): interests do not rank
    p = Parts(None, np.zeros(3, np.float32), np.array([[0.0, 0.0, 1.0]], np.float32), [1],
              np.array([[0.0, 1.0, 0.0]], np.float32))
    assert _rank(p, Blend(), 1, d)[0][0][0] == 1
    assert _rank(p, Blend(), 1, Defaults(0.5, 0.0, 1.0, (), 1.0, 1.0))[0][0][0] == 2


def test_a_fit_that_starts_at_sequence_weight_zero_stays_there_on_noise():
    """STREAM_APP_SEQUENCE_WEIGHT=0: a version serves as the plain model unless its
    sequence part clearly ranks better; an informative sequence part is taken up."""
    rng = np.random.default_rng(4)
    rows, n = 300, 60
    positives = rng.integers(n, size=rows)
    noise = lambda: rng.normal(size=(rows, n)).astype(np.float32)  # noqa: E731
    start = Blend(0.0, 1.0, 0.5, 1.0)
    args = ([np.ones(1)] * rows, [[] for _ in range(rows)], list(positives), start)
    assert fit_blend(Parts(noise(), noise(), noise(), [1] * rows, noise()), *args,
                     names=("sequence",)).sequence == 0.0
    informative = noise()
    informative[np.arange(rows), positives] += 4.0
    assert fit_blend(Parts(informative, noise(), noise(), [1] * rows, noise()), *args,
                     names=("sequence",)).sequence > 0.0
