"""The in-memory catalog matrix every worker ranks against."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from stream_app.model.ranking import top_k

ROW_DTYPES = ("f16", "i8")  # a compact catalog's rows: float16, or int8 with a scale per row


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales): each row as int8 times its own float32 scale (its largest
    component maps to 127; an all-zero row gets scale 1)."""
    vectors = np.asarray(vectors, np.float32)
    top = np.abs(vectors).max(axis=-1) if vectors.shape[-1] else np.zeros(vectors.shape[:-1])
    scales = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    codes = np.rint(vectors / scales[..., None]).astype(np.int8)
    return codes, scales


_F16_SCALE = np.float32(2.0 ** 112)  # float16's exponent bias (15) to float32's (127)


def f16_to_f32(half: np.ndarray) -> np.ndarray:
    """float16 -> float32, bit for bit what ``astype`` gives for finite values (normal,
    subnormal and zero), in about half of numpy's time on this machine (numpy converts
    element by element here; this is three vector operations): the exponent and
    mantissa bits moved into place, rescaled by 2^112, the sign put back. Infinities and
    NaNs come out finite: catalog vectors are checked finite before they are stored."""
    bits = half.view(np.uint16).astype(np.uint32)
    out = ((bits & 0x7FFF) << 13).view(np.float32)
    out *= _F16_SCALE
    out.view(np.uint32)[...] |= (bits & 0x8000) << 16
    return out


class Rows:
    """Read-only float32 access to stored rows: ``rows[a:b]`` and ``rows[array]`` return
    float32 copies (int8 codes times their row's scale), so a compact catalog is never
    converted whole."""

    ndim = 2

    def __init__(self, codes: np.ndarray, scales: np.ndarray | None) -> None:
        self.codes = codes
        self.scales = scales

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    def __getitem__(self, at: slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if not isinstance(at, slice):
            at = np.asarray(at, np.int64)
        codes = self.codes[at]
        if codes.dtype == np.float16:
            return f16_to_f32(codes)
        block = np.asarray(codes, np.float32)
        return block if self.scales is None else block * self.scales[at][:, None]


class CatalogIndex:
    """Item id <-> row of a dense matrix; deletes swap the last row into the hole.

    Rows are float32, or once ``compact`` (a large catalog) float16 (half the memory) or
    int8 with a float32 scale per row (a quarter); the re-scoring reads its candidates'
    rows as float32 (``rows_f32``, ``rows``). Watchers (``watch``) hear of every row whose
    item or vector changed (``ann.AnnCandidates``).
    """

    def __init__(self, dim: int, dtype: type = np.float32) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=dtype)
        self._scale: np.ndarray | None = None  # int8 rows: each row's scale
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
        """The rows in their stored dtype (float16 once compact); int8 rows as the float32
        they stand for (a copy of the whole catalog: large-catalog paths read ``rows``)."""
        if self._scale is not None:
            return self.rows()[0: self._size]
        return self._matrix[: self._size]

    def rows(self, size: int | None = None) -> Rows:
        """The first ``size`` rows (None: the backing array, capacity included; rows past
        ``len`` are not items) as float32 on reading, without a copy until read. Writes
        after this call may show through: ``ann`` marks those rows changed."""
        stop = len(self._matrix) if size is None else size
        return Rows(self._matrix[:stop], None if self._scale is None else self._scale[:stop])

    @property
    def compacted(self) -> bool:
        return self._matrix.dtype != np.float32

    def dense(self) -> np.ndarray:
        """The rows as float32 (a view unless compact)."""
        return np.asarray(self.matrix, np.float32)

    def rows_f32(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """These rows as float32."""
        return self.rows()[np.asarray(rows, np.int64)]

    def compact(self, dtype: str = "f16") -> None:
        """Keep the rows compact from now on: ``f16`` (half the memory of float32) or
        ``i8`` (int8 and a scale per row: a quarter, and scores within ~0.2 % of a unit
        vector's length)."""
        if dtype not in ROW_DTYPES:
            raise ValueError(f"rows are {' or '.join(ROW_DTYPES)}, not {dtype!r}")
        if self.compacted:
            return
        if dtype == "i8":
            self._matrix, self._scale = quantize(self._matrix)
        else:
            self._matrix = self._matrix.astype(np.float16)

    def copy(self) -> "CatalogIndex":
        """The same ids, rows and storage, independent of later changes (no watchers)."""
        other = CatalogIndex(self.dim, self._matrix.dtype.type)
        other._matrix = self._matrix[: self._size].copy()
        other._scale = None if self._scale is None else self._scale[: self._size].copy()
        other._ids = list(self._ids)
        other._rows = dict(self._rows)
        other._size = self._size
        return other

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

    def find(self, item_ids: Iterable[str]) -> list[int | None]:
        """Each item's row (None: not in the catalog)."""
        return list(map(self._rows.get, item_ids))

    def rows_of(self, item_ids: Iterable[str]) -> list[int]:
        """The rows of those of these items the catalog holds, in their order."""
        return [r for r in map(self._rows.get, item_ids) if r is not None]

    def vector(self, item_id: str) -> np.ndarray | None:
        """The item's vector as float32 (None: not in the catalog)."""
        row = self._rows.get(item_id)
        if row is None:
            return None
        return self._matrix[row] if not self.compacted else self.rows_f32([row])[0]

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
            self._write(row, vec)
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
                if self._scale is not None:
                    self._scale[row] = self._scale[last]
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

    def _write(self, row: int, vec: np.ndarray) -> None:
        if self._scale is None:
            self._matrix[row] = vec
        else:
            self._matrix[row], self._scale[row] = quantize(np.asarray(vec, np.float32))

    def _grow(self, need: int) -> None:
        if need <= len(self._matrix):
            return
        size = max(need, 2 * len(self._matrix), 64)
        bigger = np.zeros((size, self.dim), dtype=self._matrix.dtype)
        bigger[: self._size] = self._matrix[: self._size]
        self._matrix = bigger
        if self._scale is not None:
            scale = np.ones(size, np.float32)
            scale[: self._size] = self._scale[: self._size]
            self._scale = scale
