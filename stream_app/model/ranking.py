"""Top-k selection over a score matrix with per-row exclusions."""

from __future__ import annotations

from typing import Sequence

import numpy as np


_CHUNK = 128  # best_indices: items per block whose maximum bounds the k-th best


def best_indices(row: np.ndarray, want: int) -> np.ndarray:
    """Indices of ``want`` largest entries of ``row`` (unordered; -inf entries only when
    fewer than ``want`` are finite), as ``np.argpartition(-row, want - 1)[:want]`` gives,
    several times faster on a long row: the ``want``-th largest block maximum ``t`` is
    at most the ``want``-th largest entry (``want`` blocks each hold an entry >= t), so
    only the entries >= t, a few per block at most, need partitioning."""
    n = len(row)
    if want >= n:
        return np.arange(n)
    blocks = n // _CHUNK
    if blocks < 4 * want:
        return np.argpartition(-row, want - 1)[:want]
    maxes = row[:blocks * _CHUNK].reshape(blocks, _CHUNK).max(axis=1)
    bound = np.partition(maxes, blocks - want)[blocks - want]
    if np.isnan(bound):  # NaN scores: the plain partition (NaN sorts last)
        return np.argpartition(-row, want - 1)[:want]
    cand = np.flatnonzero(row >= bound)
    if len(cand) <= want:
        return cand
    return cand[np.argpartition(-row[cand], want - 1)[:want]]


def top_k(scores: np.ndarray, k: int, exclude: Sequence[Sequence[int]]) -> list[list[tuple[int, float]]]:
    """Best k column indices per row, best first, skipping each row's excluded columns.

    ``scores`` is (rows, items); ``exclude[r]`` lists column indices barred for row r.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    n_items = scores.shape[1] if scores.ndim == 2 else 0
    out: list[list[tuple[int, float]]] = []
    for r in range(scores.shape[0]):
        row = scores[r]
        barred = [i for i in exclude[r] if 0 <= i < n_items] if exclude else []
        if barred:
            row[barred] = -np.inf
        available = n_items - len(set(barred))
        kk = min(k, available)
        if kk <= 0:
            out.append([])
            continue
        idx = best_indices(row, kk)
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out.append([(int(i), float(row[i])) for i in idx if np.isfinite(row[i])][:kk])
    return out


def quotas(shares: np.ndarray, k: int) -> np.ndarray:
    """Largest-remainder split of k slots by share (shares need not sum to 1)."""
    total = float(np.sum(shares))
    if total <= 0 or k <= 0:
        return np.zeros(len(shares), dtype=int)
    exact = np.asarray(shares, dtype=np.float64) / total * k
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[: k - int(out.sum())]:
        out[i] += 1
    return out


def blend(scores: np.ndarray, shares: np.ndarray, fallback: np.ndarray, k: int,
          exclude: Sequence[int]) -> list[tuple[int, float, int]]:
    """Top-k where each interest fills its share of the list with its own best items.

    ``scores`` is (interests, items): each interest's score for every item (prior
    included); ``fallback`` scores items when there is no interest (or slots are
    left). Returns (item index, score, interest index or -1), best first.
    """
    owned = np.array(scores, np.result_type(scores, np.float32))  # a copy: masked in place
    return _fill_masked(owned, shares, fallback, k, exclude)


def _fill_masked(scores: np.ndarray, shares: np.ndarray, fallback: np.ndarray | None, k: int,
                 exclude: Sequence[int]) -> list[tuple[int, float, int]]:
    """``blend`` of ``scores`` the caller owns: its excluded items are set to -inf in
    place, once per user (``fallback`` is copied before it is; None: each item's best
    interest score, found only when the interests leave slots)."""
    barred = _in_range(exclude, scores.shape[1])
    scores[:, barred] = -np.inf
    if fallback is not None:
        fallback = np.array(fallback, copy=True)
        fallback[barred] = -np.inf
    return _fill(scores, shares, fallback, k)


def _in_range(exclude: Sequence[int], n_items: int) -> np.ndarray:
    at = np.asarray(exclude, np.int64).reshape(-1)
    return at[(at >= 0) & (at < n_items)]


def _fill(masked: np.ndarray, shares: np.ndarray, fallback: np.ndarray | None, k: int
          ) -> list[tuple[int, float, int]]:
    """``blend`` over rows whose excluded items are already -inf (one pass per user,
    not one per interest): an interest takes its best items not taken by one before it,
    from its ``slots + len(taken)`` best (at most ``len(taken)`` of those are taken).
    ``fallback`` None: the rows' maximum, computed only when slots are left for it."""
    n_items = masked.shape[1]
    taken: list[tuple[int, float, int]] = []
    held: set[int] = set()
    slots = quotas(shares, k) if len(shares) else np.zeros(0, dtype=int)

    def take(row: np.ndarray, n: int, interest: int) -> None:
        if n <= 0:
            return
        idx = best_indices(row, min(n_items, n + len(held)))
        for i in idx[np.argsort(-row[idx], kind="stable")]:
            if n <= 0 or not np.isfinite(row[i]):
                break
            i = int(i)
            if i in held:
                continue
            taken.append((i, float(row[i]), interest))
            held.add(i)
            n -= 1

    for interest in np.argsort(-np.asarray(shares), kind="stable"):
        take(masked[interest], int(slots[interest]), int(interest))
    if len(taken) < k:
        take(masked.max(axis=0) if fallback is None else fallback, k - len(taken), -1)
    return sorted(taken, key=lambda t: -t[1])


def rank_interests(sims: np.ndarray, strengths: np.ndarray, prior_scores: np.ndarray, k: int,
                   exclude: Sequence[int]) -> list[tuple[int, float, int]]:
    """A user's list: each interest's similarities plus the prior, shares by strength.

    ``sims`` is (interests, items); with no strength left the prior alone ranks.
    """
    scores = sims + prior_scores[None, :]  # a new array: ``_fill_masked`` owns it
    # with strength left the fallback is each item's best interest score (the rows'
    # maximum after masking: the excluded items are -inf in every row as in it)
    fallback = None if strengths.sum() > 0 else prior_scores
    return _fill_masked(scores, strengths, fallback, k, exclude)
