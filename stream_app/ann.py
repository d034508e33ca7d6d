"""Approximate nearest-neighbour candidates for large catalogs (usearch HNSW).

A catalog of at least ``ann_min_items`` items is not ranked by brute force: each
interest direction and each sequence query asks an HNSW graph for its
``ann_candidates`` nearest items, and those (with the most popular items and the
user's co-visited ones) are re-scored exactly by the one scoring function
(``pipeline.Processor._ranked``). usearch was picked by measurement on this machine
(docs/operations.md, "Large catalogs").

``AnnCandidates`` keeps one graph in step with one ``CatalogIndex`` (the text vectors,
or a model version's item vectors) without stopping the stream:

- the graph is built in a thread from a snapshot of the index: the rows as they were
  and the ids they held (positions in the snapshot are the graph's keys);
- every item upserted, removed or moved to another row after the snapshot is *dirty*:
  the graph's answers for it are dropped and the dirty items still in the catalog are
  searched exactly (brute force over their current vectors);
- when the dirty items exceed ``ann_rebuild_fraction`` of the catalog, a new graph is
  built in a thread from a new snapshot and swapped in between two batches (``maintain``);
  until the first graph is ready, candidates come from exact search over every row.

Vectors in the graph are compact (``ann_dtype``: ``b1`` sign bits compared by Hamming
distance, ``i8``, or ``f16``; a model
version's graph, of inner products, is never ``b1``); the re-scoring reads the
catalog's own rows (``ann_rows``: float16, or int8 with a scale per row).
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from stream_app.logs import log

if TYPE_CHECKING:
    from stream_app.index import CatalogIndex, Rows

EXACT_CHUNK = 65536  # rows converted to float32 at a time by the exact search
SELF_CHECK = 1000  # items each new graph is searched for by their own vector (``self_found``)


@dataclass(frozen=True)
class AnnParams:
    """How large catalogs are searched (no defaults here: ``Settings.ann_params()``)."""

    min_items: int  # below: brute force, no graph
    candidates: int  # per query, re-scored exactly
    dtype: str  # the text graph's copy of the vectors: "b1" (sign bits), "i8", "f16", "f32"
    connectivity: int  # HNSW M
    expansion_add: int  # ef at build time
    expansion_search: int  # ef at query time (at least ``candidates``)
    rebuild_fraction: float  # dirty share of the catalog that starts a rebuild
    threads: int  # build and search threads (0: every core)
    popular_pool: int = 1000  # most popular items scored against every event's interests
    rows: str = "f16"  # the catalog's own rows, re-scored: "f16" or "i8" (a scale per row)


def usearch_index() -> type:
    """usearch's ``Index``, with ONNX Runtime loaded first where it is installed.

    usearch's extension carries its own copy of the C++ runtime and exports its locale
    ids as process-wide (GNU unique) symbols; ONNX Runtime loaded after it crashes the
    process on import (SIGSEGV; usearch 2.26, onnxruntime 1.32). Loaded before, both work.
    A worker with the ``onnx`` encoder backend may build its first graph before it encodes
    its first text, so the order is fixed here, at the one place usearch is imported.
    """
    try:
        import onnxruntime  # noqa: F401  (see above: ~20 MB, only where installed)
    except ImportError:
        pass
    from usearch.index import Index

    return Index


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand memory freed inside the process back to the system (glibc's ``malloc_trim``;
    nothing elsewhere). A graph build's float32 chunks and a replaced graph leave
    hundreds of MB free but kept by the allocator; measured at 200,000 items after four
    builds: RSS 334 -> 302 MB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _threads(params: AnnParams) -> int:
    return params.threads if params.threads > 0 else (os.cpu_count() or 1)


class AnnGraph:
    """One built HNSW graph over a snapshot: graph key n is ``ids[n]``."""

    def __init__(self, ids: Sequence[str], graph: object, scale: float, metric: str) -> None:
        self.ids = ids
        self.graph = graph
        self.scale = scale
        self.metric = metric

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, ids: Sequence[str], matrix: np.ndarray | Rows, params: AnnParams,
              metric: str = "ip") -> "AnnGraph":
        """A graph over ``matrix`` (rows aligned with ``ids``), built chunk by chunk so only
        a chunk at a time is converted to float32."""
        index_class = usearch_index()
        n, dim = len(ids), matrix.shape[1] if matrix.ndim == 2 else 0
        scale = 1.0
        binary = params.dtype == "b1"
        if binary:  # sign bits, compared by Hamming distance (angles: unit vectors only)
            metric = "hamming"
        graph = index_class(ndim=max(dim, 8 if binary else 1), metric=metric, dtype=params.dtype,
                      connectivity=params.connectivity, expansion_add=params.expansion_add,
                      expansion_search=max(params.expansion_search, params.candidates))
        threads = _threads(params)
        for start in range(0, n, EXACT_CHUNK):
            stop = min(n, start + EXACT_CHUNK)
            chunk = np.asarray(matrix[start:stop], np.float32) * np.float32(scale)
            graph.add(np.arange(start, stop, dtype=np.uint64),
                      np.packbits(chunk > 0, axis=1) if binary else chunk, threads=threads)
        return cls(ids, graph, scale, metric)

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, np.float32)
        if self.metric == "hamming":
            return np.packbits(queries > 0, axis=1)
        return queries * np.float32(self.scale)

    def search_keys(self, queries: np.ndarray, count: int, threads: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(keys, valid): each query's ``count`` nearest graph keys (rows of the snapshot)
        as an int64 (q, count) array, and which of them are answers (a small graph
        answers fewer)."""
        count = min(count, len(self.ids))
        if not count or not len(queries):
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), bool)
        found = self.graph.search(self._queries(queries), count, threads=threads)
        if hasattr(found, "counts"):
            keys, counts = np.asarray(found.keys, np.int64), np.asarray(found.counts)
        else:  # one query: a single ``Matches``
            keys = np.asarray(found.keys, np.int64)[None, :]
            counts = np.array([keys.shape[1]])
        return keys, np.arange(keys.shape[1])[None, :] < counts[:, None]

    def search(self, queries: np.ndarray, count: int, threads: int = 1) -> list[list[str]]:
        """Each query's ``count`` nearest item ids (fewer in a small graph)."""
        keys, valid = self.search_keys(queries, count, threads)
        return [[self.ids[int(k)] for k in keys[q][valid[q]]] for q in range(len(queries))]

    @property
    def memory_bytes(self) -> int:
        return int(getattr(self.graph, "memory_usage", 0))


def self_found(graph: AnnGraph, rows: np.ndarray | Rows, sample: int, seed: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
    """(picked, found): a sample of the graph's keys, and whether a search for each one's
    own vector (10 nearest, the graph's search width) returns it. A well-built graph finds
    all; one whose insert threads raced can leave nodes stored but unlinked, which no
    search reaches (unum-cloud/USearch#735)."""
    n = len(graph)
    picked = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    if not len(picked):
        return picked, np.zeros(0, bool)
    keys, valid = graph.search_keys(np.asarray(rows[picked], np.float32), 10, 1)
    return picked, ((keys == picked[:, None]) & valid).any(axis=1)


def missed(found: np.ndarray) -> float:
    """The share of ``self_found``'s items not found (0 when none were searched)."""
    return round(float(1.0 - found.mean()), 5) if len(found) else 0.0


def unreachable(graph: AnnGraph, rows: np.ndarray | Rows, sample: int, seed: int = 2
                ) -> float:
    """Share of a sample of the graph's items that a search for their own vector misses."""
    return missed(self_found(graph, rows, sample, seed)[1])


def exact_top(matrix: np.ndarray | Rows, rows: np.ndarray | None, queries: np.ndarray,
              count: int) -> list[np.ndarray]:
    """Each query's ``count`` best rows by inner product, over ``rows`` of ``matrix``
    (None: every row), a chunk at a time in float32. Unordered."""
    queries = np.asarray(queries, np.float32)
    total = len(matrix) if rows is None else len(rows)
    if not len(queries) or not total or count <= 0:
        return [np.zeros(0, np.int64) for _ in range(len(queries))]
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start in range(0, total, EXACT_CHUNK):
        stop = min(total, start + EXACT_CHUNK)
        at = np.arange(start, stop) if rows is None else np.asarray(rows[start:stop], np.int64)
        block = np.asarray(matrix[start:stop] if rows is None else matrix[at], np.float32)
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        cand = np.concatenate([best_rows, np.broadcast_to(at, (len(queries), len(at)))], axis=1)
        keep = min(count, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if keep < scores.shape[1] \
            else np.broadcast_to(np.arange(scores.shape[1]), (len(queries), scores.shape[1]))
        best_scores = np.take_along_axis(scores, part, 1)
        best_rows = np.take_along_axis(cand, part, 1)
    return list(best_rows)


class _Changed:
    """Rows of an index changed since a snapshot (a growing bitmap)."""

    def __init__(self) -> None:
        self.bits = np.zeros(0, bool)
        self.count = 0

    def mark(self, rows: Sequence[int]) -> None:
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return
        need = int(rows.max()) + 1
        if need > len(self.bits):
            bigger = np.zeros(max(need, 2 * len(self.bits), 1024), bool)
            bigger[:len(self.bits)] = self.bits
            self.bits = bigger
        self.count += int(np.count_nonzero(~self.bits[rows]))
        self.bits[rows] = True

    def of(self, keys: np.ndarray) -> np.ndarray:
        """Which of these rows changed."""
        out = np.zeros(keys.shape, bool)
        inside = keys < len(self.bits)
        out[inside] = self.bits[keys[inside]]
        return out

    def rows(self, size: int) -> np.ndarray:
        return np.flatnonzero(self.bits[:size])


class AnnCandidates:
    """An ``AnnGraph`` kept in step with a ``CatalogIndex`` (see the module's doc).

    Graph keys are the rows of the snapshot. A row whose item or vector changed since
    (an upsert writes it, a removal empties it or moves the last row into it) is marked;
    an unmarked row still holds the item and vector the graph was built from, so the
    graph's answers are rows of the index as it is now, less the marked ones, which are
    searched exactly.
    """

    def __init__(self, index: "CatalogIndex", params: AnnParams, metric: str = "ip",
                 label: str = "text", self_check: bool = True) -> None:
        self.index = index
        self.params = params
        self.metric = metric
        self.label = label
        self.graph: AnnGraph | None = None
        self.changed = _Changed()  # since the serving graph's snapshot
        self._next: _Changed | None = None  # since the building graph's snapshot
        self._building: Future | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.builds = 0
        self.last_build_s = 0.0
        # share of SELF_CHECK sampled items the serving graph cannot find by their own
        # vector; None: not checked (vectors that are not unit length: an item's own
        # vector need not be its nearest by inner product)
        self.self_check = self_check
        self.unreachable: float | None = None
        index.watch(self._touched)

    def _touched(self, rows: Sequence[int]) -> None:
        self.changed.mark(rows)
        if self._next is not None:
            self._next.mark(rows)

    # --- building -----------------------------------------------------------
    @property
    def building(self) -> bool:
        return self._building is not None

    def start_build(self) -> bool:
        """Snapshot the index and build a graph over it in a thread; False if one is
        already building."""
        if self._building is not None:
            return False
        size = len(self.index)
        ids = list(self.index.ids[:size])
        matrix = self.index.rows(size)  # the rows as of now: later writes are marked
        self._next = _Changed()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"ann-{self.label}")
        params, metric, check = self.params, self.metric, self.self_check

        def build() -> tuple[AnnGraph, float, tuple[np.ndarray, np.ndarray] | None]:
            started = time.perf_counter()
            graph = AnnGraph.build(ids, matrix, params, metric)
            seconds = time.perf_counter() - started
            found = None
            if check:
                try:
                    found = self_found(graph, matrix, SELF_CHECK)
                except Exception as exc:  # noqa: BLE001 - a diagnostic: keep the graph
                    log("ann_check_failed", index=self.label, error=repr(exc))
            return graph, seconds, found

        self._building = self._pool.submit(build)
        log("ann_build_started", index=self.label, items=size)
        return True

    def build_now(self) -> None:
        """Build and install, waiting (tests; ``Catalog.use`` builds a model version's
        graph off the event loop itself)."""
        self.start_build()
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running build is done and installed; True when one was."""
        if self._building is None:
            return False
        try:
            self._building.result(timeout)
        except Exception:  # noqa: BLE001 - maintain logs it
            pass
        return self.maintain(start=False)

    def maintain(self, start: bool = True) -> bool:
        """Between batches: install a finished graph; (``start``) start a build when none
        serves yet or too much changed since. True when a graph was installed."""
        installed = False
        if self._building is not None and self._building.done():
            future, self._building = self._building, None
            changed, self._next = self._next or _Changed(), None
            try:
                graph, seconds, checked = future.result()
            except Exception as exc:  # noqa: BLE001 - keep serving with what we have
                log("ann_build_failed", index=self.label, error=repr(exc))
            else:
                self.graph, self.changed = graph, changed  # the old graph is freed here
                release_freed_memory()
                self.builds += 1
                self.last_build_s = seconds
                self.unreachable = None
                if checked is not None:
                    picked, found = checked
                    # rows rewritten since the snapshot: not judged
                    self.unreachable = missed(found[~changed.of(picked)])
                installed = True
                log("ann_built", index=self.label, items=len(graph),
                    seconds=round(seconds, 1), changed=changed.count,
                    bytes=graph.memory_bytes, unreachable=self.unreachable)
        if start and self._building is None and self.needs_build():
            self.start_build()
        return installed

    def needs_build(self) -> bool:
        if not len(self.index):
            return False
        if self.graph is None:
            return True
        return self.changed.count > self.params.rebuild_fraction * max(len(self.index), 1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # --- searching ----------------------------------------------------------
    def search(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """Each query's candidate rows of the index (unordered): the graph's ``count``
        nearest that are unchanged since its snapshot, plus the best ``count`` of the
        changed rows (exact); exact over every row while no graph serves yet."""
        queries = np.asarray(queries, np.float32)
        if not len(queries):
            return []
        size = len(self.index)
        stored = self.index.rows()
        if self.graph is None:
            return exact_top(self.index.rows(size), None, queries, count)
        keys, valid = self.graph.search_keys(queries, count, _threads(self.params))
        valid &= ~self.changed.of(keys)
        fresh_rows = self.changed.rows(size)
        fresh = exact_top(stored, fresh_rows, queries, count) if len(fresh_rows) \
            else [np.zeros(0, np.int64)] * len(queries)
        return [np.concatenate([keys[q][valid[q]], fresh[q]]) for q in range(len(queries))]

    def describe(self) -> dict[str, object]:
        return {"items": len(self.index), "graph_items": len(self.graph) if self.graph else 0,
                "changed": self.changed.count, "building": self.building,
                "builds": self.builds, "last_build_s": round(self.last_build_s, 2),
                "graph_bytes": self.graph.memory_bytes if self.graph else 0,
                "unreachable": self.unreachable,
                "dtype": self.params.dtype}
