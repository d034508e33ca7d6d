"""A worker's view of the catalog: the in-memory index kept in step with Redis."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from stream_app.index import CatalogIndex
from stream_app.model.popularity import Popularity
from stream_app.store import Store


class Catalog:
    """Loads the item vectors of one model version, then tails the change log."""

    def __init__(self, store: Store, model_version: str, dim: int,
                 popularity_half_life: float) -> None:
        self.store = store
        self.model_version = model_version
        self.index = CatalogIndex(dim)
        self.titles: dict[str, str] = {}
        self.popularity = Popularity(popularity_half_life)
        self.position = "0-0"

    async def load(self) -> None:
        """Full load; changes after the head we read first are re-applied by ``sync``."""
        position = await self.store.catalog_head()
        ids, vecs = await self.store.load_catalog(self.model_version)
        self.index.upsert(zip(ids, vecs))
        await self._load_titles(ids)
        await self.refresh_popularity()
        self.position = position

    async def refresh_popularity(self) -> None:
        """The deployment-wide counts (every worker adds its own events to them)."""
        self.popularity.replace(await self.store.popularity())

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
        found = await self.store.item_vectors(self.model_version, ids)
        self.index.upsert(found.items())
        gone = [i for i in ids if i not in found]
        self.index.remove(gone)
        for item_id in gone:
            self.titles.pop(item_id, None)
        await self._load_titles(list(found))

    async def resolve(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of these items: the local index first, Redis for items not synced yet."""
        out: dict[str, np.ndarray] = {}
        missing = []
        for item_id in set(item_ids):
            vec = self.index.vector(item_id)
            if vec is None:
                missing.append(item_id)
            else:
                out[item_id] = vec
        if missing:
            found = await self.store.item_vectors(self.model_version, missing)
            self.index.upsert(found.items())
            await self._load_titles(list(found))
            out.update(found)
        return out
