"""Co-visitation: which items are chosen together, counted online, instantly.

When a user chooses j, every pair (i, j) with i among that user's previous
``history`` chosen items counts once, or ``pair_recency ** k`` when i was chosen k + 1
choices before j: forward ("after i comes j") in full, and backward ("before j came i")
``backward`` times that (1: symmetric, order ignored; 0: only what came after counts).
An item's co-visit score for a user is its summed cosine similarity,
c[i, j] / sqrt(n[i] n[j]), to the user's latest ``history`` items, the one chosen k
choices back weighted ``recency ** k``. This is the part of a score that moves with
every event (the sequence model moves with every training round). Only each row's
``keep`` best items get a score, so serving and held-out judging rank the same sparse
part.

Pure: counts live in memory; ``Store`` shares increments between workers.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from stream_app.model.ranking import best_indices

DENSE_MAX_ITEMS = 10_000  # a dense n x n float32 matrix up to this many items (400 MB)


class _Dense:
    def __init__(self, n: int) -> None:
        self.c = np.zeros((n, n), dtype=np.float32)

    def grow(self, n: int) -> "_Dense | _Sparse":
        if n <= len(self.c):
            return self
        if n > DENSE_MAX_ITEMS:
            sparse = _Sparse(n)
            for i, j in zip(*np.nonzero(self.c)):
                sparse.c[int(i)][int(j)] = float(self.c[i, j])
            return sparse
        size = min(DENSE_MAX_ITEMS, max(n, 2 * len(self.c), 64))  # grows geometrically
        bigger = np.zeros((size, size), np.float32)
        bigger[:len(self.c), :len(self.c)] = self.c
        self.c = bigger
        return self

    def add(self, i: int, j: int, w: float, back: float) -> None:
        self.c[i, j] += w
        self.c[j, i] += w * back

    def weighted_sum(self, rows: Sequence[int], weights: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(weights, np.float32) @ self.c[list(rows), :n]


class _Sparse:
    def __init__(self, n: int) -> None:
        self.c: list[dict[int, float]] = [{} for _ in range(n)]

    def grow(self, n: int) -> "_Sparse":
        self.c.extend({} for _ in range(n - len(self.c)))
        return self

    def add(self, i: int, j: int, w: float, back: float) -> None:
        self.c[i][j] = self.c[i].get(j, 0.0) + w
        if back:
            self.c[j][i] = self.c[j].get(i, 0.0) + w * back

    def weighted_sum(self, rows: Sequence[int], weights: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for i, w in zip(rows, weights):
            row = self.c[i]
            if row:
                cols = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
                vals = np.fromiter(row.values(), dtype=np.float32, count=len(row))
                out[cols] += w * vals
        return out


class CoVisits:
    """Co-visitation counts over item ids (any id: rows are assigned as ids appear)."""

    def __init__(self, history: int = 20, keep: int = 100, recency: float = 1.0,
                 pair_recency: float = 1.0, backward: float = 1.0) -> None:
        self.history = history
        self.keep = keep
        self.recency = recency  # a history item k choices back weighs recency ** k
        self.pair_recency = pair_recency  # a pair k + 1 choices apart counts this ** k
        self.backward = backward  # the reverse direction of a pair counts this much of it
        self.rows: dict[str, int] = {}
        self.counts = np.zeros(0, np.float64)
        self._c: _Dense | _Sparse = _Dense(0)

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, item_id: str) -> int:
        row = self.rows.get(item_id)
        if row is None:
            row = self.rows[item_id] = len(self.rows)
            if row >= len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(max(64, row), np.float64)])
            self._c = self._c.grow(row + 1)
        return row

    def add(self, choices: Iterable[tuple[Sequence[str], str]]) -> None:
        """Count choices: (the items the user chose before, oldest first; the chosen one)."""
        for previous, chosen in choices:
            col = self._row(chosen)
            self.counts[col] += 1.0
            before = [i for i in dict.fromkeys(previous) if i != chosen][-self.history:]
            for back, item_id in enumerate(reversed(before)):
                self._c.add(self._row(item_id), col, self.pair_recency ** back,
                            self.backward)

    def scores(self, histories: Sequence[Sequence[str]], item_ids: Sequence[str]
               ) -> np.ndarray:
        """(len(histories), len(item_ids)): each history's co-visit score of every item,
        zero outside its ``keep`` best."""
        out = np.zeros((len(histories), len(item_ids)), np.float32)
        if not len(self.rows) or not len(item_ids):
            return out
        n = len(self.rows)
        norms = np.zeros(n, np.float64)
        np.divide(1.0, np.sqrt(self.counts[:n]), out=norms, where=self.counts[:n] > 0)
        at = np.array([self.rows.get(i, -1) for i in item_ids], np.int64)
        known = at >= 0
        for r, history in enumerate(histories):
            tail = list(history)[-self.history:]
            back = [(self.rows[i], len(tail) - 1 - k) for k, i in enumerate(tail)
                    if i in self.rows]
            if not back:
                continue
            rows = [row for row, _ in back]
            weights = norms[rows] * self.recency ** np.array([b for _, b in back], np.float64)
            sims = self._c.weighted_sum(rows, weights, n) * norms
            row = np.zeros(len(item_ids), np.float32)
            row[known] = sims[at[known]]
            if self.keep < len(row):
                top = best_indices(row, self.keep)
                out[r, top] = row[top]
            else:
                out[r] = row
        return out
