"""What a worker process holds: settings, encoder, Redis store, catalog, processor, metrics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.encoder import Encoder
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.pipeline import Outputs, Processor
from stream_app.store import Store, connect


class Runtime:
    """Built before the event loop; Redis is connected lazily inside it (``ready``)."""

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self.metrics = Metrics()
        self.counts: Counter = Counter()
        self.started_at = time.time()
        self._ready: asyncio.Future | None = None
        self.store: Store
        self.catalog: Catalog
        self.processor: Processor

    async def ready(self) -> None:
        """Connect and load the catalog once, whichever agent asks first."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                self.store = Store(connect(self.settings.redis_url, self.settings.redis_cluster),
                                   self.settings.key_prefix)
                self.catalog = Catalog(self.store, self.encoder.version, self.encoder.dim,
                                       self.settings.popularity_half_life_s)
                await self.catalog.load()
                self.processor = Processor(self.settings, self.store, self.encoder,
                                           self.catalog, self.metrics)
                self.metrics.catalog_items.set(len(self.catalog.index))
                log("worker_ready", catalog_items=len(self.catalog.index),
                    model_version=self.encoder.version)
                self._ready.set_result(None)
            except BaseException as exc:
                self._ready.set_exception(exc)
                self._ready = None
                raise
        await asyncio.shield(self._ready)

    def ready_now(self) -> bool:
        return self._ready is not None and self._ready.done() and self._ready.exception() is None

    async def publish(self, topic: str, out: Outputs, batch_records: int, seconds: float) -> None:
        """Account for a finished batch: metrics, local and deployment-wide counters, a log line."""
        self.counts.update(out.counts)
        self.counts[f"records:{topic}"] += batch_records
        self.metrics.records.labels(topic, "ok").inc(batch_records - out.counts["dead_letters"])
        self.metrics.records.labels(topic, "dead_letter").inc(out.counts["dead_letters"])
        self.metrics.recommendations.inc(out.counts["recommendations"])
        self.metrics.batch_seconds.labels(topic).observe(seconds)
        self.metrics.batch_size.labels(topic).observe(batch_records)
        self.metrics.catalog_items.set(len(self.catalog.index))
        await self.store.incr_stats(dict(out.counts))
        for _, dl in out.dead_letters:
            log("dead_letter", topic=dl["source_topic"], partition=dl["partition"],
                offset=dl["offset"], error=dl["error"])

    async def stats(self) -> dict[str, Any]:
        return {
            "model_version": self.encoder.version,
            "catalog_items": len(self.catalog.index),
            "uptime_s": round(time.time() - self.started_at, 1),
            "worker": dict(self.counts),
            "deployment": await self.store.stats(),
            "text_cache": {"hits": self.processor.text_encoder.hits,
                           "misses": self.processor.text_encoder.misses},
        }

    async def interests(self, user_id: str) -> dict[str, Any] | None:
        """The user's interests, strongest first, with labels an operator can read."""
        record = (await self.store.read_users([user_id]))[user_id]
        state = record.state
        if state.n_events == 0:
            return None
        at = state.last_ts or time.time()
        strengths = state.strengths(at, self.processor.params)
        index = self.catalog.index
        rows = []
        for n in np.argsort(-strengths, kind="stable"):
            interest = state.interests[n]
            nearest = (index.rank(interest.direction()[None, :], 3, [()])[0]
                       if len(index) else [])
            source = interest.source
            rows.append({
                "strength": round(float(strengths[n]), 4),
                "long_term": round(interest.long, 4), "short_term": round(interest.short, 4),
                "last_update_ts": interest.ts,
                "age_s": round(at - interest.ts, 1),
                "label": [self.catalog.titles.get(i, i) for i, _ in nearest],
                "shaped_by": (source if source.startswith("text:")
                              else {"item_id": source,
                                    "title": self.catalog.titles.get(source, source)}),
            })
        return {"user_id": user_id, "events_applied": state.n_events,
                "last_event_ts": state.last_ts, "interests": rows,
                "seen_items": len(record.seen)}

    async def recommend(self, user_id: str, k: int) -> list[tuple[str, float, str]]:
        record = (await self.store.read_users([user_id]))[user_id]
        return self.processor.recommend(record, k)
