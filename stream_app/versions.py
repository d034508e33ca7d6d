"""Model versions in Redis: checkpoints, the current version, promotion history.

Keys (prefix P; one hash tag, so a Redis Cluster keeps them in one slot):
  P:{models}:blob:<version>  the checkpoint (``Adapter.to_bytes``), written in one SET
  P:{models}:meta            hash version -> JSON (parent, metrics, held-out scores)
  P:{models}:current         the version workers rank with (absent: the base encoder)
  P:{models}:history         list of versions made current, oldest first
  P:{models}:seq             counter naming new versions

A checkpoint is written before its metadata, and metadata before it can be made
current, so a listed or current version is always loadable whole.
"""

from __future__ import annotations

import json
import time
from typing import Any

from stream_app import redis_scripts as scripts
from stream_app.catalog import Catalog
from stream_app.model.adapter import Adapter
from stream_app.redis_keys import Keys
from stream_app.store import MODEL_HISTORY_MAX


class UnknownVersion(LookupError):
    """Asked for a version the registry does not hold."""


class Registry:
    def __init__(self, client: Any, prefix: str, base_version: str) -> None:
        self.r = client
        self.base_version = base_version
        keys = Keys(prefix).models
        self._blob = keys + "blob:"
        self._meta = keys + "meta"
        self._current = keys + "current"
        self._history = keys + "history"
        self._seq = keys + "seq"
        self._promote = client.register_script(scripts.PROMOTE)

    async def next_version(self) -> str:
        n = await self.r.incr(self._seq)
        return f"{self.base_version}+ft{n:05d}"

    async def save(self, adapter: Adapter, meta: dict[str, Any]) -> None:
        """Store a version; one that does not score finite numbers is refused (ValueError)."""
        adapter.verify()
        await self.r.set(self._blob + adapter.version, adapter.to_bytes())
        await self.describe(adapter, meta)

    async def describe(self, adapter: Adapter, meta: dict[str, Any]) -> None:
        """Write a stored version's metadata (again: a round's outcome can change after
        it was saved)."""
        await self.r.hset(self._meta, adapter.version, json.dumps({**meta, **adapter.meta()}))

    async def current(self) -> str:
        raw = await self.r.get(self._current)
        return raw.decode() if raw else self.base_version

    async def load(self, version: str) -> Adapter:
        if version == self.base_version:
            return Adapter.base(version)
        blob = await self.r.get(self._blob + version)
        if blob is None:
            raise UnknownVersion(version)
        adapter = Adapter.from_bytes(blob)
        adapter.verify()
        return adapter

    async def meta(self, version: str) -> dict[str, Any]:
        raw = await self.r.hget(self._meta, version)
        if raw is None:
            raise UnknownVersion(version)
        return json.loads(raw)

    async def versions(self) -> list[dict[str, Any]]:
        """Every stored version, oldest first, with ``current`` and ``status`` filled in."""
        raw = await self.r.hgetall(self._meta)
        current = await self.current()
        rows = sorted((json.loads(v) for v in raw.values()), key=lambda m: m.get("created_at", 0))
        for row in rows:
            row["current"] = row["version"] == current
        return rows

    async def history(self) -> list[str]:
        return [v.decode() for v in await self.r.lrange(self._history, 0, -1)]

    async def promote(self, version: str, reason: str, replacing: str | None = None) -> bool:
        """Make ``version`` current (the base version or any stored one).

        With ``replacing``, only while that version is still current: False, and nothing
        changed, when another was made current meanwhile (an operator's promote or rollback
        during a training round stands). One script, so no second writer slips between."""
        meta = ""
        if version != self.base_version:
            record = await self.meta(version)  # raises UnknownVersion
            await self.load(version)  # raises ValueError for a broken version
            record.setdefault("promotions", []).append({"at": time.time(), "reason": reason})
            meta = json.dumps(record)
        done = await self._promote(keys=[self._current, self._meta, self._history],
                                   args=[version, meta, MODEL_HISTORY_MAX, replacing or "",
                                         self.base_version])
        return bool(done)

    async def rollback(self, version: str | None = None) -> str:
        """Back to ``version``, or to the version current before this one; returns it."""
        current = await self.current()
        if version is None:
            earlier = [v for v in await self.history() if v != current]
            version = earlier[-1] if earlier else self.base_version
        await self.promote(version, reason=f"rollback from {current}")
        return version

    async def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions; the current one always stays."""
        rows = await self.versions()
        doomed = [r["version"] for r in rows[:-keep] if not r["current"]] if keep > 0 else []
        if doomed:
            await self.r.hdel(self._meta, *doomed)
            await self.r.delete(*[self._blob + v for v in doomed])
        return doomed


async def follow(catalog: Catalog, registry: Registry) -> tuple[str, float] | None:
    """Rank with the registry's current version if this catalog does not already.

    Returns (version, seconds the swap took) when it swapped.
    """
    wanted = await registry.current()
    if wanted == catalog.adapter.version:
        return None
    adapter = await registry.load(wanted)
    if adapter.base_version != catalog.base_version:
        raise ValueError(f"version {wanted} was trained on {adapter.base_version}, "
                         f"this worker encodes with {catalog.base_version}")
    return wanted, await catalog.use(adapter)
