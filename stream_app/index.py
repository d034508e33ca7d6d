"""The in-memory catalog matrix every worker ranks against."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from stream_app.model.ranking import top_k


class CatalogIndex:
    """Item id <-> row of a dense float32 matrix; deletes swap the last row into the hole."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix[: self._size]

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def row(self, item_id: str) -> int:
        return self._rows[item_id]

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        return None if row is None else self._matrix[row]

    def with_matrix(self, matrix: np.ndarray) -> "CatalogIndex":
        """Same ids in the same rows, other vectors (a model version's view of the catalog,
        of the version's own width)."""
        matrix = np.array(matrix, dtype=np.float32)
        other = CatalogIndex(matrix.shape[1] if matrix.ndim == 2 else self.dim)
        other._matrix = matrix.reshape(self._size, other.dim)
        other._ids = list(self._ids)
        other._rows = dict(self._rows)
        other._size = self._size
        return other

    def upsert(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        for item_id, vec in items:
            row = self._rows.get(item_id)
            if row is None:
                row = self._size
                self._grow(row + 1)
                self._rows[item_id] = row
                self._ids.append(item_id)
                self._size += 1
            self._matrix[row] = vec

    def remove(self, item_ids: Iterable[str]) -> None:
        for item_id in item_ids:
            row = self._rows.pop(item_id, None)
            if row is None:
                continue
            last = self._size - 1
            if row != last:
                moved = self._ids[last]
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()
            self._size -= 1

    def rank(self, queries: np.ndarray, k: int,
             exclude: Sequence[Iterable[str]]) -> list[list[tuple[str, float]]]:
        """Top-k items per query row (cosine for unit vectors), in one matrix product."""
        if len(queries) == 0:
            return []
        scores = np.asarray(queries, dtype=np.float32) @ self.matrix.T
        rows = [[self._rows[i] for i in ex if i in self._rows] for ex in exclude]
        return [[(self._ids[i], s) for i, s in hits] for hits in top_k(scores, k, rows)]

    def _grow(self, need: int) -> None:
        if need <= len(self._matrix):
            return
        bigger = np.zeros((max(need, 2 * len(self._matrix), 64), self.dim), dtype=np.float32)
        bigger[: self._size] = self._matrix[: self._size]
        self._matrix = bigger
