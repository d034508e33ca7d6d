"""The one scoring function: serving, the HTTP API and the trainer's held-out judging all
rank through ``parts`` and ``rank_parts``.

A score has four parts (``adapter.py``): the sequence model's logit, each interest's
cosine with the item's text vector, the co-visit score and the popularity prior.
``parts`` computes them for a batch (one matrix product each); ``rank_parts`` weighs
them with a version's
``Blend`` and fills each list, every interest taking its share by strength
(``ranking.rank_interests``) so a list follows all of a user's current interests and
says which one each item comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stream_app.evaluation.protocol import hit_ndcg
from stream_app.model.adapter import Adapter, Blend
from stream_app.model.ranking import rank_interests


@dataclass
class Parts:
    """The unweighted parts of a batch's scores over N items."""

    sequence: np.ndarray | None  # (b, N) sequence logits; None: no sequence model
    prior: np.ndarray  # (b, N) or (N,): log(1 + decayed popularity)
    sims: np.ndarray  # (sum of interests, N): cosine of each interest with each item
    counts: Sequence[int]  # interests per row, in order
    covisit: np.ndarray  # (b, N) co-visit scores


def parts(adapter: Adapter, text: np.ndarray, ranking: np.ndarray, prior: np.ndarray,
          interests: Sequence[np.ndarray], histories: Sequence[Sequence[int]],
          covisit: np.ndarray, queries: np.ndarray | None = None,
          with_sequence: bool = True) -> Parts:
    """``text`` (N, d) text vectors, ``ranking`` (N, e) the version's item vectors (rows
    aligned), ``interests`` each row's (m, d) unit directions, ``histories`` each row's
    latest chosen items as rows, oldest first, ``covisit`` (b, N) co-visit scores.

    The N items may be any subset of the catalog (a large catalog's candidates): then
    ``queries`` gives the sequence model's (b, e) queries, computed from the histories
    beforehand (``histories`` is then unused).

    ``with_sequence`` False: no sequence part (serving a version whose sequence weight is 0
    need not run its model; the trainer's judging always has it, to fit that weight)."""
    counts = [len(i) for i in interests]
    n_items = len(text)
    if sum(counts) and n_items:
        sims = np.concatenate([np.asarray(i, np.float32) for i in interests if len(i)]) @ text.T
    else:
        sims = np.zeros((sum(counts), n_items), np.float32)
    sequence = sequence_part(adapter, ranking, histories, queries) if with_sequence else None
    return Parts(sequence, np.asarray(prior, np.float32), sims, counts,
                 np.asarray(covisit, np.float32))


def sequence_part(adapter: Adapter, ranking: np.ndarray, histories: Sequence[Sequence[int]],
                  queries: np.ndarray | None = None) -> np.ndarray | None:
    """(b, N) the version's sequence logits (``parts``' arguments); None for the plain
    encoder. The only part that differs between versions ranking the same rows."""
    if adapter.is_base or not len(ranking):
        return None
    if queries is None:
        queries = adapter.sequence_queries(histories, ranking)
    return None if queries is None else queries @ ranking.T


BLEND_PARTS = ("sequence", "interest", "covisit", "popularity")


@dataclass(frozen=True)
class Defaults:
    """The settings' weights, for a blend that fitted none (the plain encoder's), and
    which of a blend's weights the trainer fits (the others keep these)."""

    popularity: float
    covisit: float
    interest: float
    fitted: tuple[str, ...]  # the blend's weights the trainer fits (BLEND_PARTS)
    margin: float  # standard errors a fitted weight's move must win by (``fit_blend``)
    sequence: float  # the sequence model's weight a version's fitting starts from

    def weights(self, blend: Blend) -> Blend:
        """``blend`` with every weight it leaves to the settings (None) filled in."""
        return Blend(blend.sequence,
                     self.interest if blend.interest is None else blend.interest,
                     self.popularity if blend.popularity is None else blend.popularity,
                     self.covisit if blend.covisit is None else blend.covisit)


def rank_parts(p: Parts, blend: Blend, defaults: Defaults,
               strengths: Sequence[np.ndarray], excludes: Sequence[Sequence[int]], k: int
               ) -> list[list[tuple[int, float, int]]]:
    """Each row's top k as (item row, score, interest index or -1), best first."""
    w = defaults.weights(blend)
    out = []
    at = 0
    for n, m in enumerate(p.counts):
        prior = p.prior[n] if p.prior.ndim == 2 else p.prior
        base = w.popularity * prior + w.covisit * p.covisit[n]
        if p.sequence is not None:
            base = base + w.sequence * p.sequence[n]
        sims = w.interest * p.sims[at:at + m]
        at += m
        out.append(rank_interests(sims, np.asarray(strengths[n], np.float64), base, k,
                                  excludes[n]))
    return out


BLEND_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
POOL = 50  # the blend search ranks each choice among the best items of every part


def _pools(p: Parts, excludes: Sequence[Sequence[int]], positives: Sequence[int], size: int
           ) -> tuple[Parts, list[list[int]], list[int]]:
    """The same rows over fewer items: each row's ``size`` best (not excluded) items by
    each part alone (sequence, every interest, co-visits, prior) and its positive. An
    item outside all of them seldom enters a top 10 under any weights, and ranking ~200
    items instead of the catalog makes the search's many rankings cheap. Rows are padded
    to one width; padding is excluded."""
    b = len(p.counts)
    at = np.cumsum([0, *p.counts])
    prior = p.prior if p.prior.ndim == 2 else np.broadcast_to(p.prior, (b, p.prior.shape[-1]))
    n_items = prior.shape[1]
    keep = min(size, n_items)
    pools = []
    for r in range(b):
        rows = [prior[r], p.covisit[r], *p.sims[at[r]:at[r + 1]]]
        if p.sequence is not None:
            rows.append(p.sequence[r])
        stacked = np.stack(rows).astype(np.float32, copy=True)
        stacked[:, np.asarray(excludes[r], np.int64)] = -np.inf
        best = np.argpartition(-stacked, keep - 1, axis=1)[:, :keep] if keep < n_items \
            else np.broadcast_to(np.arange(n_items), stacked.shape)
        pool = np.union1d(best.ravel(), [positives[r]])
        pools.append(pool[np.isfinite(stacked[:, pool]).all(axis=0) | (pool == positives[r])])
    width = max((len(pool) for pool in pools), default=0)
    index = np.zeros((b, width), np.int64)
    for r, pool in enumerate(pools):
        index[r, :len(pool)] = pool
    rows_of = np.repeat(np.arange(b), p.counts)
    sub = Parts(None if p.sequence is None else np.take_along_axis(p.sequence, index, 1),
                np.take_along_axis(prior, index, 1), p.sims[np.arange(len(rows_of))[:, None],
                                                            index[rows_of]]
                if len(rows_of) else np.zeros((0, width), np.float32),
                p.counts, np.take_along_axis(p.covisit, index, 1))
    pads = [list(range(len(pool), width)) for pool in pools]
    new_positives = [int(np.searchsorted(pool, positives[r])) for r, pool in enumerate(pools)]
    return sub, pads, new_positives


def fit_blend(p: Parts, strengths: Sequence[np.ndarray], excludes: Sequence[Sequence[int]],
              positives: Sequence[int], start: Blend, k: int = 10, sweeps: int = 2,
              margin: float = 1.0, names: Sequence[str] = BLEND_PARTS) -> Blend:
    """The weights (of ``names``; the others stay at ``start``'s) that rank these held-out
    choices best by NDCG@k: from ``start`` (the settings' weights, sequence 1), each
    weight in turn over a grid, ``sweeps`` times. A move is taken only when it is better
    by more than ``margin`` standard errors of the paired per-choice difference: a round
    holds a few hundred choices, and weights that win on their noise rank the stream
    worse than the settings' weights. With the sequence weight among ``names``, a version
    whose sequence model does not help serves as the plain weights would (its weight 0)."""
    unknown = set(names) - set(BLEND_PARTS)
    if unknown:
        raise ValueError(f"unknown blend weights {sorted(unknown)}; known: {BLEND_PARTS}")
    weights = {name: float(getattr(start, name) or 0.0) for name in BLEND_PARTS}
    unused = Defaults(0.0, 0.0, 0.0, (), 0.0, 0.0)
    p, excludes, positives = _pools(p, excludes, positives, POOL)
    seen: dict[tuple[float, ...], np.ndarray] = {}  # a later sweep meets earlier trials again

    def gains(w: dict[str, float]) -> np.ndarray:
        key = tuple(w.values())
        if key not in seen:
            seen[key] = per_choice(rank_parts(p, Blend(**w), unused, strengths, excludes, k),
                                   positives, k)[:, 1]
        return seen[key]

    best = gains(weights)
    for _ in range(sweeps):
        for name in [n for n in BLEND_PARTS if n in names]:
            for value in BLEND_GRID:
                trial = {**weights, name: value}
                if not any(trial.values()) or trial == weights:
                    continue
                diff = gains(trial) - best
                if diff.mean() > margin * diff.std() / np.sqrt(len(diff)) + 1e-12:
                    weights, best = trial, gains(trial)
    return Blend(**weights)


def per_choice(lists: Sequence[Sequence[tuple[int, float, int]]], positives: Sequence[int],
               k: int = 10) -> np.ndarray:
    """(len(lists), 2): HR@k and NDCG@k of each ranked row against its one relevant row
    (the judging protocol's ``hit_ndcg``)."""
    return np.array([hit_ndcg([r for r, _, _ in ranked], target, k)
                     for ranked, target in zip(lists, positives)], np.float64).reshape(-1, 2)


def judged(lists: Sequence[Sequence[tuple[int, float, int]]], positives: Sequence[int],
           k: int = 10) -> tuple[float, float]:
    """Mean HR@k and NDCG@k of ranked rows against one relevant row each."""
    if not lists:
        return 0.0, 0.0
    hr, gain = per_choice(lists, positives, k).mean(axis=0)
    return float(hr), float(gain)
