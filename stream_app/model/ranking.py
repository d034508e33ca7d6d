"""Top-k selection over a score matrix with per-row exclusions."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
        idx = np.argpartition(-row, kk - 1)[:kk] if kk < n_items else np.arange(n_items)
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out.append([(int(i), float(row[i])) for i in idx if np.isfinite(row[i])][:kk])
    return out
