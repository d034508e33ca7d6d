"""The in-memory catalog matrix every worker ranks against."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from stream_app.model.ranking import top_k


class CatalogIndex:
    """Item id <-> row of a dense matrix; deletes swap the last row into the hole.

    Rows are float32, or float16 once ``compact`` (a large catalog: half the memory; the
    exact re-scoring reads its candidates' rows as float32). Watchers (``watch``) hear of
    every row whose item or vector changed (``ann.AnnCandidates``).
    """

    def __init__(self, dim: int, dtype: type = np.float32) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=dtype)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._size = 0
        self._watchers: list[Callable[[Sequence[int]], None]] = []

    def __len__(self) -> int:
        return self._size

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    @property
    def matrix(self) -> np.ndarray:
        """The rows in their stored dtype (float16 once compact)."""
        return self._matrix[: self._size]

    @property
    def stored(self) -> np.ndarray:
        """The backing array, capacity included (rows past ``len`` are not items)."""
        return self._matrix

    @property
    def compacted(self) -> bool:
        return self._matrix.dtype != np.float32

    def dense(self) -> np.ndarray:
        """The rows as float32 (a view unless compact)."""
        return np.asarray(self.matrix, np.float32)

    def rows_f32(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """These rows as float32."""
        return np.asarray(self._matrix[np.asarray(rows, np.int64)], np.float32)

    def compact(self) -> None:
        """Keep the rows as float16 from now on (half the memory of float32)."""
        if not self.compacted:
            self._matrix = self._matrix.astype(np.float16)

    def watch(self, callback: Callable[[Sequence[int]], None]) -> None:
        """Call ``callback(rows)`` with the rows each change writes or empties."""
        self._watchers.append(callback)

    def _changed(self, rows: Sequence[int]) -> None:
        for callback in self._watchers:
            callback(rows)

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def row(self, item_id: str) -> int:
        return self._rows[item_id]

    def vector(self, item_id: str) -> np.ndarray | None:
        """The item's vector as float32 (None: not in the catalog)."""
        row = self._rows.get(item_id)
        if row is None:
            return None
        return self._matrix[row] if not self.compacted else self._matrix[row].astype(np.float32)

    def with_matrix(self, matrix: np.ndarray, dtype: type = np.float32) -> "CatalogIndex":
        """Same ids in the same rows, other vectors (a model version's view of the catalog,
        of the version's own width), stored as ``dtype``."""
        matrix = np.array(matrix, dtype=dtype)
        other = CatalogIndex(matrix.shape[1] if matrix.ndim == 2 else self.dim, dtype)
        other._matrix = matrix.reshape(self._size, other.dim)
        other._ids = list(self._ids)
        other._rows = dict(self._rows)
        other._size = self._size
        return other

    def upsert(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        written = []
        for item_id, vec in items:
            row = self._rows.get(item_id)
            if row is None:
                row = self._size
                self._grow(row + 1)
                self._rows[item_id] = row
                self._ids.append(item_id)
                self._size += 1
            self._matrix[row] = vec
            written.append(row)
        if written and self._watchers:
            self._changed(written)

    def remove(self, item_ids: Iterable[str]) -> None:
        emptied = []
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
            emptied += [row, last]
        if emptied and self._watchers:
            self._changed(emptied)

    def rank(self, queries: np.ndarray, k: int,
             exclude: Sequence[Iterable[str]]) -> list[list[tuple[str, float]]]:
        """Top-k items per query row (cosine for unit vectors), in one matrix product."""
        if len(queries) == 0:
            return []
        queries = np.asarray(queries, dtype=np.float32)
        scores = (queries @ self.matrix.T if not self.compacted else np.concatenate(
            [queries @ self.rows_f32(range(a, min(a + 65536, self._size))).T
             for a in range(0, self._size, 65536)] or [np.zeros((len(queries), 0))], axis=1))
        rows = [[self._rows[i] for i in ex if i in self._rows] for ex in exclude]
        return [[(self._ids[i], s) for i, s in hits] for hits in top_k(scores, k, rows)]

    def _grow(self, need: int) -> None:
        if need <= len(self._matrix):
            return
        bigger = np.zeros((max(need, 2 * len(self._matrix), 64), self.dim),
                          dtype=self._matrix.dtype)
        bigger[: self._size] = self._matrix[: self._size]
        self._matrix = bigger
