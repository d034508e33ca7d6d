"""A worker's view of the catalog: the in-memory index kept in step with Redis.

Two matrices with the same rows: ``index`` holds the text vectors (what user state
is built from, the same for every model version) and ``ranking`` the vectors of the
model version in use (the same object while that is the base model). ``use``
swaps in another version: its vectors are computed off the event loop, changes made
meanwhile are replayed onto them, then both the version and its matrix change in
one assignment, between two batches' ranking steps.

A catalog of at least ``ann_min_items`` items that serves (a worker's: ``serve``)
keeps its vectors as float16 and an approximate nearest-neighbour graph per matrix
(``ann.AnnCandidates``): ``candidates`` gives each event's rows to re-score exactly.
The text graph follows the change log (``upsert``/``remove``, rebuilt in a thread
and swapped in ``maintain``); a model version's graph is built with its vectors in
``use``, before the swap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from typing import Any, Iterable, Sequence

import numpy as np

from stream_app.ann import (AnnCandidates, AnnGraph, AnnParams, exact_top,
                            release_freed_memory)
from stream_app.index import CatalogIndex, Rows
from stream_app.model.adapter import Adapter
from stream_app.model.covisit import Choice, CoVisits
from stream_app.model.neighbours import TextLending, TextNeighbours, borrowed, smooth
from stream_app.model.popularity import Popularity
from stream_app.store import Store


class Catalog:
    """Loads the text vectors of the catalog, then tails the change log."""

    def __init__(self, store: Store, base_version: str, dim: int,
                 popularity_half_life: float, covisits: CoVisits | None = None,
                 covisit_log_max: int = 100_000, ann: AnnParams | None = None,
                 lending: TextLending | None = None) -> None:
        self.store = store
        self.base_version = base_version
        self.index = CatalogIndex(dim)
        self.adapter = Adapter.base(base_version)
        self.ranking = self.index
        self.titles: dict[str, str] = {}
        self.popularity = Popularity(popularity_half_life)
        self.covisits = covisits if covisits is not None else CoVisits()
        self.covisit_log_max = covisit_log_max
        self.covisit_positions: dict[int, str] = {}  # shard -> where we stand in its log
        self.source = uuid.uuid4().hex  # this process's entries in the co-visit log
        self.position = "0-0"
        self._changes: list[tuple[str, list[str]]] | None = None  # recorded during a swap
        self.ann = ann  # None: brute force at any size
        self.serving = False  # a worker's catalog (``serve``); the trainer's never is
        self.text_ann: AnnCandidates | None = None
        self.ranking_ann: AnnCandidates | None = None
        self._popular: tuple[float, int, np.ndarray] = (0.0, -1, np.zeros(0, np.int64))
        # None: co-visit scores are the counts' alone; else items borrow their text
        # neighbours' (``model.neighbours``), the table following the index's changes
        self.lending = lending if lending is not None and lending.weight > 0 else None
        self.neighbours = TextNeighbours(lending.neighbours) if self.lending else None
        if self.neighbours is not None:
            self.index.watch(self.neighbours.changed)
        self.covisit_rows = CovisitRows(self.index, lambda: self.covisits)
        self.prior_rows = PriorRows(self.index, self.popularity)

    @classmethod
    def for_settings(cls, store: Store, base_version: str, dim: int, s: Any) -> "Catalog":
        """A catalog as ``s`` (``Settings``) configures it: the one place that wires it."""
        return cls(store, base_version, dim, s.popularity_half_life_s,
                   CoVisits(s.covisit_history, s.covisit_keep, s.covisit_recency,
                            s.covisit_pair_recency, s.covisit_backward,
                            s.covisit_target_exponent, s.covisit_half_life_s,
                            s.covisit_count_prior),
                   s.covisit_log_max, s.ann_params(), s.text_lending())

    async def load(self) -> None:
        """Full load; changes after the head we read first are re-applied by ``sync``."""
        position = await self.store.catalog_head()
        ids, vecs = await self.store.load_catalog(self.base_version)
        self.upsert(zip(ids, vecs))
        await self._load_titles(ids)
        await self.refresh_popularity()
        await self.refresh_covisits()
        self.position = position

    def upsert(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Text vectors in, the model version's vectors kept in step."""
        pairs = list(items)
        ids = [i for i, _ in pairs]
        self.index.upsert(pairs)
        if self._changes is not None:
            self._changes.append(("upsert", ids))
        if self.ranking is not self.index and pairs:
            self.ranking.upsert(zip(ids, self.adapter.item_vectors(
                ids, np.stack([v for _, v in pairs]))))
        if self.serving and pairs:
            self._scale()

    def remove(self, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        self.index.remove(ids)
        if self._changes is not None:
            self._changes.append(("remove", ids))
        if self.ranking is not self.index:
            self.ranking.remove(ids)
        for item_id in ids:
            self.titles.pop(item_id, None)

    # --- large catalogs -------------------------------------------------------
    @property
    def large(self) -> bool:
        """Ranked through candidates (``ann_min_items`` reached by a serving catalog)."""
        return self.text_ann is not None

    def serve(self) -> None:
        """This catalog ranks (a worker's): from ``ann_min_items`` on, compact vectors
        and nearest-neighbour graphs."""
        if not self.serving:
            self.serving = True
            self._scale()

    def _scale(self) -> None:
        if (self.ann is None or not self.serving or self.text_ann is not None
                or len(self.index) < self.ann.min_items):
            return
        self.index.compact(self.ann.rows)
        self.text_ann = AnnCandidates(self.index, self.ann, "ip", "text")
        if self.ranking is not self.index:
            self.ranking.compact()
            self.ranking_ann = AnnCandidates(self.ranking, _inner(self.ann), "ip", "ranking",
                                             self_check=False)
        self.maintain()

    def maintain(self) -> bool:
        """Between batches: swap in graphs built meanwhile, start the builds needed.
        True when a graph was swapped in."""
        installed = False
        for ann in (self.text_ann, self.ranking_ann):
            if ann is not None:
                installed |= ann.maintain()
        return installed

    def describe_ann(self) -> dict[str, Any]:
        return {"large": self.large, "text": self.text_ann.describe() if self.text_ann else None,
                "ranking": self.ranking_ann.describe() if self.ranking_ann else None}

    def popular_rows(self, count: int) -> np.ndarray:
        """The ``count`` most popular items' rows, best first (the order of decayed counts
        does not depend on the time they are decayed to); recomputed at most once a second
        or when items were added or removed."""
        checked, size, rows = self._popular
        if size == len(self.index) and time.monotonic() - checked < 1.0:
            return rows[:count]
        entries = self.popularity.entries
        ids = [i for i in entries if i in self.index]
        if ids:
            values = np.array([entries[i] for i in ids], np.float64).reshape(-1, 2)
            half_life = self.popularity.half_life
            key = np.log2(np.maximum(values[:, 0], 1e-300))
            if not np.isinf(half_life):
                key = key + values[:, 1] / half_life
            keep = min(len(ids), max(count, 1))
            best = np.argpartition(-key, keep - 1)[:keep] if keep < len(ids) else \
                np.arange(len(ids))
            best = best[np.argsort(-key[best], kind="stable")]
            rows = np.array([self.index.row(ids[n]) for n in best], np.int64)
        else:
            rows = np.zeros(0, np.int64)
        self._popular = (time.monotonic(), len(self.index), rows)
        return rows[:count]

    def candidates(self, directions: Sequence[np.ndarray], queries: np.ndarray | None,
                   prior_of: Any, w_popular: float, w_sequence: float, count: int
                   ) -> list[np.ndarray]:
        """Each event's candidate rows (sorted, unique): the ``count`` nearest items of
        each of its interest directions (text graph) and of its sequence query (the
        version's graph), the best ``count`` of the popular pool for each direction by
        similarity plus the weighted prior, and the ``count`` most popular.
        ``prior_of(rows)`` gives the prior of rows; ``queries`` is None for the base model."""
        assert self.text_ann is not None
        b = len(directions)
        per_row: list[list[np.ndarray]] = [[] for _ in range(b)]
        counts = [len(d) for d in directions]
        owner = np.repeat(np.arange(b), counts)
        if sum(counts):
            stacked = np.concatenate([np.asarray(d, np.float32) for d in directions if len(d)])
            for n, rows in zip(owner, self.text_ann.search(stacked, count)):
                per_row[n].append(rows)
        if queries is not None and len(self.ranking):
            queries = np.asarray(queries, np.float32)
            asked = np.flatnonzero(np.abs(queries).sum(axis=1) > 0)
            if len(asked):
                if self.ranking_ann is not None:
                    found = self.ranking_ann.search(queries[asked], count)
                else:  # a version swapped in below the threshold, the catalog grew since
                    found = exact_top(self.ranking.rows(len(self.ranking)), None,
                                      queries[asked], count)
                for n, rows in zip(asked, found):
                    per_row[n].append(rows)
        pool = self.popular_rows(max(self.ann.popular_pool if self.ann else 0, count))
        if len(pool):
            prior = w_popular * prior_of(pool)
            top = pool[:count]
            for n in range(b):
                per_row[n].append(top)
            if sum(counts) and len(pool) > count:
                scored = stacked @ self.index.rows_f32(pool).T + prior[None, :]
                if queries is not None and len(self.ranking):
                    scored = scored + w_sequence * (queries[owner] @ self.ranking.rows_f32(pool).T)
                best = np.argpartition(-scored, count - 1, axis=1)[:, :count]
                for n, cols in zip(owner, best):
                    per_row[n].append(pool[cols])
        return [np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
                for rows in per_row]

    async def use(self, adapter: Adapter) -> float:
        """Rank with ``adapter`` from now on; returns the seconds the vectors took (and
        in a large catalog, its graph: built before the swap)."""
        started = time.perf_counter()
        if adapter.is_base:
            self.adapter, self.ranking = adapter, self.index
            self.ranking_ann = None
            return time.perf_counter() - started
        snapshot = self.index.copy()
        large = self.text_ann is not None and self.ann is not None
        params = self.ann
        self._changes = []
        try:
            def build() -> tuple[CatalogIndex, AnnGraph | None]:
                vectors = _item_vectors(adapter, list(snapshot.ids),
                                        snapshot.rows(len(snapshot)),
                                        np.float16 if large else np.float32)
                if not np.isfinite(vectors).all():
                    raise ValueError(f"version {adapter.version} gives non-finite item "
                                     "vectors")
                ranking = snapshot.with_matrix(vectors, vectors.dtype)
                graph = AnnGraph.build(list(ranking.ids), ranking.matrix, _inner(params),
                                       "ip") if large and params is not None else None
                return ranking, graph

            ranking, graph = await asyncio.to_thread(build)
            ranking_ann = None
            if graph is not None and params is not None:
                ranking_ann = AnnCandidates(ranking, _inner(params), "ip", "ranking",
                                            self_check=False)
                ranking_ann.graph = graph
                ranking_ann.builds = 1
            for op, ids in self._changes:  # no await from here to the swap
                if op == "remove":
                    ranking.remove(ids)
                    continue
                # the same operations in the same order keep the rows aligned; an item
                # removed again later gets a placeholder until that removal is replayed
                text = np.zeros((len(ids), self.index.dim), np.float32)
                for n, item_id in enumerate(ids):
                    vec = self.index.vector(item_id)
                    if vec is not None:
                        text[n] = vec
                ranking.upsert(zip(ids, adapter.item_vectors(ids, text)))
        finally:
            self._changes = None
        self.adapter, self.ranking, self.ranking_ann = adapter, ranking, ranking_ann
        if large:
            release_freed_memory()  # the previous version's rows and graph
        return time.perf_counter() - started

    async def refresh_popularity(self, reload_after_s: float = 0.0) -> int:
        """The deployment-wide counts (every worker adds its own events to them): the
        whole hash at the first call, then the values any worker's counting gave them
        since (the shared log); the whole hash again when the log no longer reaches back
        to our position, or (``reload_after_s`` > 0) when it was last read that long ago.
        Returns how many values were read."""
        pop = self.popularity
        applied = 0
        if pop.positions and not 0 < reload_after_s <= time.monotonic() - pop.loaded_at:
            applied, complete = await self._follow_popularity()
            if complete:
                return applied
        positions, entries = await self.store.popularity_snapshots()
        pop.replace(entries, positions, time.monotonic())
        return applied + len(entries)

    async def _follow_popularity(self) -> tuple[int, bool]:
        """Each shard's logged values since our position there: (how many, False when a
        log was trimmed past our position: the whole hash is to be read again)."""
        pop = self.popularity
        applied = 0
        for shard in range(self.store.shards):
            while True:
                read = await self.store.popularity_since(pop.positions.get(shard, "0-0"), shard)
                if read is None:
                    return applied, False
                pop.positions[shard], changes, more = read
                applied += pop.update(changes)
                if not more:
                    break
        return applied, True

    def covisit_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(len(histories), catalog size): each history's co-visit score of every item,
        in row order. In a catalog of at most ``lending.max_items`` (and ranked by brute
        force, below ``ann.min_items``) items borrow from their text neighbours
        (``model.neighbours``), on both sides: a user's item reads its neighbours' pairs
        too, and a suggested item gets its neighbours' scores, each the less the more
        choices it has. Serving and the trainer's held-out judging both score here."""
        ids = self.index.ids
        lending, table = self.lending, self.neighbours
        if (lending is None or table is None or not lending.applies(len(ids))
                # ranked through candidates when serving: judged as served
                or self.ann is not None and len(ids) >= self.ann.min_items):
            if table is not None and len(table.nb):
                table.clear()  # no stale table, and no set of changed rows growing
            return self.covisits.scores(histories, ids, item_rows=self.covisit_rows.rows())
        table.update(self.index.matrix)
        covisits = self.covisits
        cov_rows = self.covisit_rows.rows()  # catalog row -> co-visit row
        share_of = lending.shares(covisits.current_counts(cov_rows))  # by catalog row
        scores = covisits.scores(histories, ids,
                                 lambda tails, w, of: borrowed(tails, w, of, self.index,
                                                               table, cov_rows, share_of),
                                 item_rows=cov_rows)
        return smooth(scores, table, share_of)

    async def count_covisits(self, choices: Sequence[Choice],
                             share: bool = True, token: str = "") -> None:
        """Count these choices here at once, and (``share``) for every other worker
        (logged first: a failed log write leaves nothing counted; the same ``token`` again
        logs nothing twice). The log holds only the earlier items a choice is counted with
        (``CoVisits.trimmed``)."""
        if share:
            choices = self.covisits.trimmed(choices)  # counts as the whole choices do
            await self.store.add_covisits(self.source, choices, self.covisit_log_max, token)
        self.covisits.add(choices)

    async def refresh_covisits(self) -> int:
        """Apply the co-visits other workers logged since the last call; returns how many."""
        applied = 0
        for shard in range(self.store.shards):
            while True:
                position, entries = await self.store.covisits_since(
                    self.covisit_positions.get(shard, "0-0"), shard)
                self.covisit_positions[shard] = position
                for source, choices in entries:
                    if source != self.source:
                        self.covisits.add(choices)
                        applied += len(choices)
                if not entries:
                    break
        return applied

    async def _load_titles(self, ids: list[str]) -> None:
        """Titles of these items; an item without one is shown by its id (not kept: a
        catalog of vectors only costs no memory here)."""
        meta = await self.store.item_meta(ids)
        for i, m in meta.items():
            if m.get("title"):
                self.titles[i] = m["title"]
            else:
                self.titles.pop(i, None)

    async def sync(self) -> int:
        """Apply catalog changes made by any worker since the last call; returns how many.
        A large catalog also swaps in the graphs built meanwhile (``maintain``)."""
        position, changed = await self.store.catalog_changes(self.position)
        if changed:
            await self.refresh(set(changed))
        self.position = position
        if self.maintain() or self.large:
            await self._publish_ann()
        return len(changed)

    async def _publish_ann(self) -> None:
        """This worker's graphs, for operators and ``stream-app bench`` (``P:ann:<worker>``,
        JSON, expiring after a minute without a sync)."""
        import json

        await self.store.r.set(self.store.keys.ann(self.source),
                               json.dumps(self.describe_ann()), ex=60)

    async def refresh(self, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        found = await self.store.item_vectors(self.base_version, ids)
        self.upsert(found.items())
        self.remove([i for i in ids if i not in found])
        await self._load_titles(list(found))

    async def resolve(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Text vectors of these items: the local index first, Redis for items not synced yet."""
        out: dict[str, np.ndarray] = {}
        missing = []
        for item_id in set(item_ids):
            vec = self.index.vector(item_id)
            if vec is None:
                missing.append(item_id)
            else:
                out[item_id] = vec
        if missing:
            found = await self.store.item_vectors(self.base_version, missing)
            self.upsert(found.items())
            await self._load_titles(list(found))
            out.update(found)
        return out


def _item_vectors(adapter: Adapter, ids: list[str], text: np.ndarray | Rows, dtype: type,
                  chunk: int = 65536) -> np.ndarray:
    """The version's vectors of every item, a chunk at a time (a compact catalog is never
    converted whole to float32)."""
    if len(ids) <= chunk:
        return np.asarray(adapter.item_vectors(ids, np.asarray(text[0:len(ids)], np.float32)),
                          dtype)
    first = adapter.item_vectors(ids[:chunk], np.asarray(text[:chunk], np.float32))
    out = np.empty((len(ids), first.shape[1]), dtype)
    out[:chunk] = first
    for start in range(chunk, len(ids), chunk):
        stop = min(len(ids), start + chunk)
        out[start:stop] = adapter.item_vectors(ids[start:stop],
                                               np.asarray(text[start:stop], np.float32))
    return out


def _inner(params: AnnParams) -> AnnParams:
    """A model version's graph: its vectors are compared by inner product, not angle (sign
    bits do not order them): f16 where the text graph keeps bits."""
    return dataclasses.replace(params, dtype="f16") if params.dtype == "b1" else params


class PriorRows:
    """The popularity prior of every catalog row, its counts kept as arrays in step with
    the catalog's changes (the rows each writes or empties) and with the counts that
    changed (``Popularity.take_changed``): a batch reads only those, not every item's
    count (at 10^4 items the per-id reads cost a batch ~3 ms)."""

    def __init__(self, index: CatalogIndex, popularity: Popularity) -> None:
        self.index = index
        self.popularity = popularity
        self._values = self._stamps = np.zeros(0, np.float64)
        self._written: set[int] | None = None  # catalog rows changed since; None: all
        index.watch(self._rows_changed)

    def _rows_changed(self, rows: Sequence[int]) -> None:
        if self._written is not None:
            self._written.update(rows)

    def prior(self, at: float) -> np.ndarray:
        """(catalog size,) ``Popularity.prior`` of every row as of event time ``at``."""
        pop, index = self.popularity, self.index
        ids, size = index.ids, len(index)
        changed = pop.take_changed()
        if changed is None or self._written is None or len(self._values) != size:
            self._values, self._stamps = pop.entries_of(ids[:size])
        else:
            rows = {r for r in self._written if r < size}
            rows.update(index.row(i) for i in changed if i in index)
            if rows:
                at_rows = np.fromiter(rows, np.int64, len(rows))
                self._values[at_rows], self._stamps[at_rows] = pop.entries_of(
                    [ids[r] for r in at_rows.tolist()])
        self._written = set()
        return pop.prior_of(self._values, self._stamps, at)


class CovisitRows:
    """Each catalog row's co-visit row (-1: never counted), kept in step with the
    catalog's changes (the rows each writes or empties) and with the items counted for
    the first time (the co-visits' newest rows): neither reads every id again, which at
    10^6 items would cost a worker ~0.1 s a batch."""

    def __init__(self, index: CatalogIndex, covisits: Any) -> None:
        self.index = index
        self._covisits = covisits  # () -> the catalog's CoVisits (it may be replaced)
        self._at = np.zeros(0, np.int64)
        self._source: CoVisits | None = None  # the CoVisits ``_at`` follows
        self._counted = 0  # its rows applied to ``_at``
        self._written: set[int] = set()  # catalog rows changed since
        self._known: tuple[np.ndarray, np.ndarray] | None = None
        index.watch(self._written.update)

    def rows(self) -> np.ndarray:
        """Catalog row -> co-visit row (-1: never counted), over the catalog as it is."""
        covisits, size = self._covisits(), len(self.index)
        if covisits is not self._source or len(covisits.rows) < self._counted:
            self._at = covisits.rows_of(self.index.ids[:size])  # another table: read all
            self._source, self._counted, self._known = covisits, len(covisits.rows), None
            self._written.clear()
            return self._at
        if len(self._at) < size:
            grown = np.full(max(size, 2 * len(self._at)), -1, np.int64)
            grown[:len(self._at)] = self._at
            self._at = grown
        if self._written:
            ids, rows = self.index.ids, covisits.rows
            for r in self._written:
                if r < size:
                    self._at[r] = rows.get(ids[r], -1)
                elif r < len(self._at):
                    self._at[r] = -1
            self._written.clear()
            self._known = None
        if len(covisits.rows) > self._counted:
            fresh = list(itertools.islice(reversed(covisits.rows),
                                          len(covisits.rows) - self._counted))
            for item, r in zip(fresh, self.index.find(fresh)):
                if r is not None:
                    self._at[r] = covisits.rows[item]
            self._counted, self._known = len(covisits.rows), None
        return self._at[:size]

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """The catalog rows that have a co-visit row (ascending), and those rows."""
        at = self.rows()
        if self._known is None:
            rows = np.flatnonzero(at >= 0)
            self._known = (rows, at[rows])
        return self._known
