"""A worker's view of the catalog: the in-memory index kept in step with Redis.

Two matrices with the same rows: ``index`` holds the text vectors (what user state
is built from, the same for every model version) and ``ranking`` the vectors of the
model version in use (the same object while that is the base model). ``use``
swaps in another version: its vectors are computed off the event loop, changes made
meanwhile are replayed onto them, then both the version and its matrix change in
one assignment, between two batches' ranking steps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Iterable, Sequence

import numpy as np

from stream_app.index import CatalogIndex
from stream_app.model.adapter import Adapter
from stream_app.model.covisit import CoVisits
from stream_app.model.popularity import Popularity
from stream_app.store import Store


class Catalog:
    """Loads the text vectors of the catalog, then tails the change log."""

    def __init__(self, store: Store, base_version: str, dim: int,
                 popularity_half_life: float, covisits: CoVisits | None = None,
                 covisit_log_max: int = 100_000) -> None:
        self.store = store
        self.base_version = base_version
        self.index = CatalogIndex(dim)
        self.adapter = Adapter.base(base_version)
        self.ranking = self.index
        self.titles: dict[str, str] = {}
        self.popularity = Popularity(popularity_half_life)
        self.covisits = covisits if covisits is not None else CoVisits()
        self.covisit_log_max = covisit_log_max
        self.covisit_position = "0-0"
        self.source = uuid.uuid4().hex  # this process's entries in the co-visit log
        self.position = "0-0"
        self._changes: list[tuple[str, list[str]]] | None = None  # recorded during a swap

    @classmethod
    def for_settings(cls, store: Store, base_version: str, dim: int, s: Any) -> "Catalog":
        """A catalog as ``s`` (``Settings``) configures it: the one place that wires it."""
        return cls(store, base_version, dim, s.popularity_half_life_s,
                   CoVisits(s.covisit_history, s.covisit_keep), s.covisit_log_max)

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

    def remove(self, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        self.index.remove(ids)
        if self._changes is not None:
            self._changes.append(("remove", ids))
        if self.ranking is not self.index:
            self.ranking.remove(ids)
        for item_id in ids:
            self.titles.pop(item_id, None)

    async def use(self, adapter: Adapter) -> float:
        """Rank with ``adapter`` from now on; returns the seconds the vectors took."""
        started = time.perf_counter()
        if adapter.is_base:
            self.adapter, self.ranking = adapter, self.index
            return time.perf_counter() - started
        snapshot = self.index.with_matrix(self.index.matrix)
        self._changes = []
        try:
            vectors = await asyncio.to_thread(adapter.item_vectors, list(snapshot.ids),
                                              snapshot.matrix)
            if not np.isfinite(vectors).all():
                raise ValueError(f"version {adapter.version} gives non-finite item vectors")
            ranking = snapshot.with_matrix(vectors)
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
        self.adapter, self.ranking = adapter, ranking
        return time.perf_counter() - started

    async def refresh_popularity(self) -> None:
        """The deployment-wide counts (every worker adds its own events to them)."""
        self.popularity.replace(await self.store.popularity())

    async def count_covisits(self, choices: Sequence[tuple[Sequence[str], str]],
                             share: bool = True) -> None:
        """Count these choices here at once, and (``share``) for every other worker
        (logged first: a failed log write leaves nothing counted)."""
        if share:
            await self.store.add_covisits(self.source, choices, self.covisit_log_max)
        self.covisits.add(choices)

    async def refresh_covisits(self) -> int:
        """Apply the co-visits other workers logged since the last call; returns how many."""
        applied = 0
        while True:
            position, entries = await self.store.covisits_since(self.covisit_position)
            self.covisit_position = position
            for source, choices in entries:
                if source != self.source:
                    self.covisits.add(choices)
                    applied += len(choices)
            if not entries:
                return applied

    async def _load_titles(self, ids: list[str]) -> None:
        meta = await self.store.item_meta(ids)
        self.titles.update((i, m.get("title") or i) for i, m in meta.items())

    async def sync(self) -> int:
        """Apply catalog changes made by any worker since the last call; returns how many."""
        position, changed = await self.store.catalog_changes(self.position)
        if changed:
            await self.refresh(set(changed))
        self.position = position
        return len(changed)

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
