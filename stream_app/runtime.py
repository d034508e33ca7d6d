"""What a worker process holds: settings, encoder, Redis store, catalog, processor, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record
from stream_app.encoder import Encoder
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.faults import Backoff, Every, infrastructure_cause, is_infrastructure
from stream_app.health import Health
from stream_app.pipeline import Outputs, Processor
from stream_app.store import Store, connect
from stream_app.versions import Registry, UnknownVersion, follow


class Once:
    """Runs an async setup once, whichever caller asks first; after a failure the next
    caller tries again."""

    def __init__(self, setup: Callable[[], Awaitable[None]]) -> None:
        self.setup = setup
        self._done: asyncio.Future | None = None

    async def __call__(self) -> None:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            try:
                await self.setup()
                self._done.set_result(None)
            except asyncio.CancelledError:
                self._done.cancel()  # the callers waiting on it are cancelled too
                self._done = None
                raise
            except BaseException as exc:
                self._done.set_exception(exc)
                self._done = None
                raise
        await asyncio.shield(self._done)

    def done(self) -> bool:
        return self._done is not None and self._done.done() and self._done.exception() is None


class ProcessRuntime:
    """What a worker or trainer process holds, built before the event loop; Redis is
    connected lazily inside it: ``await ready()`` runs ``_start`` once, whichever agent,
    timer or web view asks first."""

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self.metrics = Metrics()
        self.health = Health(settings.ready_retry_s, settings.ready_stall_s)
        self.counts: Counter = Counter()
        self.processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset done
        self.assigned: list[str] = []  # "topic/partition" this process consumes (lag timer)
        self.redis: Any = None  # the client, once started
        self.started_at = time.time()
        self.stopping = False  # set at shutdown: start-up stops waiting
        self.ready = Once(self._start_when_reachable)

    async def _start(self) -> None:
        raise NotImplementedError

    async def _start_when_reachable(self) -> None:
        """``_start``, again and again while Redis (or the model) is not there: the process
        waits, saying why on ``/readyz``, instead of crashing into a restart loop."""
        backoff = Backoff(self.settings.retry_base_s, self.settings.retry_max_s)
        said = Every(60.0)
        attempt = 0
        while True:
            if self.stopping:
                raise asyncio.CancelledError("shutting down before start-up finished")
            try:
                await self._start()
                break
            except Exception as exc:  # noqa: BLE001 - classified: a bug still raises
                cause = infrastructure_cause(exc)
                if cause is None:
                    raise
                attempt += 1
                self.health.waiting(f"{cause} ({exc!r})")
                self.metrics.retries.labels("startup", cause).inc()
                if said.due():  # once, then once a minute: not a line per attempt
                    log("startup_waiting", level=logging.WARNING, cause=cause,
                        attempt=attempt, error=repr(exc),
                        settings="REDIS_URL, STREAM_APP_REDIS_*")
                await asyncio.sleep(backoff.delay(attempt))
        self.health.started()

    def on_progress(self, topic: str, records: Sequence[Record]) -> None:
        """A batch went through: the highest offset done per partition (for the lag)."""
        self.health.progressed(topic)
        for r in records:
            key = (r.topic, r.partition)
            self.processed[key] = max(r.offset, self.processed.get(key, -1))

    async def redis_error(self) -> str | None:
        """None when Redis answers a PING within a second, else what went wrong."""
        try:
            await asyncio.wait_for(self.redis.ping(), 1.0)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return repr(exc)

    def describe(self) -> dict[str, Any]:
        """What ``/readyz`` shows of a started process."""
        return {}

    def on_retry(self, topic: str, cause: str, error: str) -> None:
        """A batch of ``topic`` is retried after an infrastructure fault."""
        self.health.retrying(topic, cause, error)
        self.metrics.retries.labels(topic, cause).inc()

    def ready_now(self) -> bool:
        return self.ready.done()


class Runtime(ProcessRuntime):
    """A worker: store, catalog (and the model version ranking), processor."""

    store: Store
    catalog: Catalog
    processor: Processor
    registry: Registry

    async def _start(self) -> None:
        self.redis = client = connect(self.settings.redis())
        self.store = Store.for_settings(client, self.settings)
        self.registry = Registry(client, self.settings.key_prefix, self.encoder.version)
        self.catalog = Catalog.for_settings(self.store, self.encoder.version, self.encoder.dim,
                                            self.settings)
        await self.catalog.load()
        try:
            await self._follow()  # rank with the promoted version from the first event
        except (UnknownVersion, ValueError) as exc:  # a broken version: the base one ranks
            self._refused(exc)
        self.processor = Processor(self.settings, self.store, self.encoder, self.catalog,
                                   self.metrics)
        self.metrics.catalog_items.set(len(self.catalog.index))
        self._show_version()
        log("worker_ready", catalog_items=len(self.catalog.index),
            model_version=self.catalog.adapter.version)

    async def follow_model(self) -> None:
        """Swap to the promoted model version if it changed (vectors built in the background)."""
        await self.ready()
        try:
            await self._follow()
        except Exception as exc:  # noqa: BLE001 - keep ranking with the version we have
            if is_infrastructure(exc):
                log("model_check_failed", level=logging.WARNING, error=repr(exc))
                return
            self._refused(exc)

    def _refused(self, exc: Exception) -> None:
        self.metrics.model_swaps.labels("refused").inc()
        log("model_swap_refused", level=logging.ERROR, error=str(exc),
            model_version=self.catalog.adapter.version)

    async def _follow(self) -> None:
        previous = self.catalog.adapter.version
        swapped = await follow(self.catalog, self.registry)
        if swapped is None:
            return
        version, seconds = swapped
        self.metrics.model_swaps.labels("ok").inc()
        self._show_version()
        log("model_swapped", model_version=version, previous=previous,
            items=len(self.catalog.ranking), seconds=round(seconds, 3))

    def describe(self) -> dict[str, Any]:
        return {"model_version": self.catalog.adapter.version}

    def _show_version(self) -> None:
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(self.catalog.adapter.version).set(1)

    async def publish(self, topic: str, out: Outputs, batch_records: int, seconds: float) -> None:
        """Account for a finished batch: metrics, local and deployment-wide counters, a log line."""
        self.counts.update(out.counts)
        self.counts[f"records:{topic}"] += batch_records
        self.metrics.records.labels(topic, "ok").inc(batch_records - out.counts["dead_letters"])
        self.metrics.records.labels(topic, "dead_letter").inc(out.counts["dead_letters"])
        for rejected in out.rejected:
            self.metrics.dead_letters.labels(topic, rejected.reason).inc()
        self.metrics.rewound.inc(out.counts["rewound"])
        self.metrics.recommendations.inc(out.counts["recommendations"])
        self.metrics.batch_seconds.labels(topic).observe(seconds)
        self.metrics.batch_size.labels(topic).observe(batch_records)
        self.metrics.catalog_items.set(len(self.catalog.index))
        await self.store.incr_stats(dict(out.counts))
        for r in out.rejected:
            log("dead_letter", level=logging.WARNING, topic=r.record.topic,
                partition=r.record.partition, offset=r.record.offset, reason=r.reason,
                error=r.error[:300])

    async def stats(self) -> dict[str, Any]:
        return {
            "model_version": self.catalog.adapter.version,
            "base_model_version": self.encoder.version,
            "catalog_items": len(self.catalog.index),
            "uptime_s": round(time.time() - self.started_at, 1),
            "worker": dict(self.counts),
            "assigned_partitions": self.assigned,
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
                "shaped_by": ((source if self.settings.show_user_text else "text:")
                              if source.startswith("text:")
                              else {"item_id": source,
                                    "title": self.catalog.titles.get(source, source)}),
            })
        return {"user_id": user_id, "events_applied": state.n_events,
                "last_event_ts": state.last_ts, "interests": rows,
                "recent_items": [{"item_id": i, "title": self.catalog.titles.get(i, i), "ts": t}
                                 for i, t in reversed(state.recent_items)],
                "seen_items": len(record.seen)}

    async def recommend(self, user_id: str, k: int) -> tuple[str, list[tuple[str, float, str]]]:
        """(the model version that ranked, the list): read together, between two swaps."""
        record = (await self.store.read_users([user_id]))[user_id]
        return self.catalog.adapter.version, self.processor.recommend(record, k)

    # --- the console (stream_app/console.py) ------------------------------------
    async def history(self, user_id: str, last: int = 0) -> dict[str, Any]:
        """The user's snapshots (``user_history``), oldest first, with titles."""
        titles = self.catalog.titles

        def item(item_id: str) -> dict[str, str]:
            return {"item_id": item_id, "label": titles.get(item_id, item_id)}

        def shaped(source: str) -> dict[str, Any]:
            if not source.startswith("text:"):
                return item(source)
            said = self.settings.show_user_text and len(source) > 5
            return {"text": source[5:] if said else None,
                    "label": self.processor.quoted(source) if said else "what you wrote"}

        entries = []
        for e in await self.store.read_history(user_id, last):
            text = e.get("text")
            entries.append({
                "ts": e["ts"], "event_id": e["id"], "type": e["type"],
                "item": item(e["item"]) if "item" in e else None,
                "text": None if text is None else shaped("text:" + text)["label"],
                "interests": [{"slot": n, "strength": strength, "shaped_by": shaped(source),
                               "opened": bool(opened)}
                              for n, (strength, source, opened) in enumerate(e["i"])],
                "top": [{**item(i), "score": score} for i, score in e["top"]]})
        return {"user_id": user_id, "keep": self.settings.user_history, "entries": entries}

    async def models(self) -> dict[str, Any]:
        """Stored versions with their held-out scores, and every change of the current
        version (promotions, reverts, rollbacks), oldest first."""
        versions = await self.registry.versions()
        history = await self.registry.history()
        base = self.registry.base_version
        promotions = {v["version"]: list(v.get("promotions", [])) for v in versions}
        changes = []
        for version in reversed(history):  # the latest promotions are the ones remembered
            known = promotions.get(version)  # none kept for the base version
            done = known.pop() if known else {}
            reason = done.get("reason", "")
            kind = ("rollback" if reason.startswith("rollback") else
                    "revert" if version == base else "promotion")
            changes.append({"version": version, "at": done.get("at"), "reason": reason,
                            "kind": kind})
        return {"current": await self.registry.current(), "serving": self.catalog.adapter.version,
                "base_version": base, "versions": versions, "changes": changes[::-1]}

    def live(self) -> dict[str, Any]:
        """This worker's own metrics as JSON; the console computes rates from two polls."""
        def samples(metric: Any, suffix: str = "") -> list[tuple[dict[str, str], float]]:
            return [(s.labels, s.value) for family in metric.collect() for s in family.samples
                    if s.name.endswith(suffix)]

        m = self.metrics
        ready = self.ready_now()
        buckets, count, total = [], 0.0, 0.0
        for family in m.lag_seconds.collect():
            for s in family.samples:
                if s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
                    buckets.append([float(s.labels["le"]), s.value])
                elif s.name.endswith("_count"):
                    count = s.value
                elif s.name.endswith("_sum"):
                    total = s.value
        return {
            "ts": time.time(), "uptime_s": round(time.time() - self.started_at, 1),
            "ready": ready, "model_version": self.catalog.adapter.version if ready else None,
            "catalog_items": len(self.catalog.index) if ready else 0,
            "records": [{**labels, "count": v} for labels, v in samples(m.records, "_total")],
            "recommendations": sum(v for _, v in samples(m.recommendations, "_total")),
            # event -> recommendation seconds: cumulative buckets (upper bound, count)
            "latency": {"buckets": buckets, "count": count, "sum": total},
            "lag": {f"{labels['topic']}/{labels['partition']}": v
                    for labels, v in samples(m.consumer_lag)},
            "dead_letters": [{**labels, "count": v}
                             for labels, v in samples(m.dead_letters, "_total")],
            "retries": [{**labels, "count": v} for labels, v in samples(m.retries, "_total")],
            "retrying": self.health.retrying_now(),
            "cas_conflicts": sum(v for _, v in samples(m.cas_conflicts, "_total")),
            "texts_encoded": sum(v for _, v in samples(m.encoded, "_total")),
        }
