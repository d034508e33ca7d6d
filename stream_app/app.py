"""The Faust app: topics, the three agents, the catalog sync timer and the web views."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Awaitable, Callable, Protocol, Sequence

import faust
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faust.types import EventT

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record, dumps
from stream_app.kafka_transport import App
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.pipeline import TRANSIENT, Outputs, isolate
from stream_app.runtime import Runtime
from stream_app.web import register_views


# Infrastructure that is down (Redis, Kafka): retry the batch with backoff, never skip it.
RETRY = TRANSIENT + (KafkaConnectionError, KafkaTimeoutError)


def broker_url(servers: str) -> str:
    hosts = [h.strip() for h in (servers or "127.0.0.1:9092").split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def to_record(event: EventT) -> Record:
    m = event.message
    return Record(topic=m.topic, partition=m.partition, offset=m.offset,
                  timestamp=m.timestamp if m.timestamp is not None else time.time(),
                  key=m.key, value=m.value)


def new_app(s: Settings, app_id: str) -> faust.App:
    """A Faust app with raw bytes in and out and this deployment's Kafka settings."""
    return App(
        app_id,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        broker=broker_url(s.kafka_bootstrap_servers),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=s.kafka_session_timeout_s,
        broker_heartbeat_interval=s.kafka_heartbeat_interval_s,
        web_port=s.web_port,
        web_bind=s.web_host,
        datadir=(os.path.join(s.data_dir, app_id) if s.data_dir
                 else tempfile.mkdtemp(prefix="stream-app-")),
        autodiscover=False,
        store="memory://",
    )


def raw_topic(app: faust.App, s: Settings, *names: str) -> faust.TopicT:
    return app.topic(*names, partitions=s.topic_partitions, key_serializer="raw",
                     value_serializer="raw")


class BatchRuntime(Protocol):
    """What a batch loop needs from its process: readiness and accounting."""

    async def ready(self) -> None: ...

    async def publish(self, topic: str, out: Outputs, batch_records: int,
                      seconds: float) -> None: ...


async def run_batches(stream: faust.StreamT, s: Settings, runtime: BatchRuntime, name: str,
                      process: Callable[[Sequence[Record]], Awaitable[Outputs]],
                      emit: Callable[[Outputs], Awaitable[None]]) -> None:
    """Micro-batches acked only after their outputs are sent (a crash re-delivers)."""
    await runtime.ready()
    async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
        records = [to_record(e) for e in events]
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                try:
                    out = await process(records)
                except TRANSIENT:
                    raise
                except Exception as exc:  # noqa: BLE001 - never stop the worker
                    log("batch_failed", level=logging.ERROR, topic=name,
                        records=len(records), error=repr(exc))
                    out = await isolate(process, records)
                await emit(out)
                break
            except RETRY as exc:
                attempt += 1
                log("batch_retry", topic=name, records=len(records), attempt=attempt,
                    error=repr(exc))
                await asyncio.sleep(min(0.1 * 2 ** attempt, 5.0))
        await runtime.publish(name, out, len(records), time.perf_counter() - started)


async def sync_catalog_changes(catalog: Catalog, metrics: Metrics) -> None:
    """One step of tailing the catalog change log; Redis down only skips this step."""
    try:
        changed = await catalog.sync()
    except TRANSIENT as exc:
        log("catalog_sync_failed", error=repr(exc))
        return
    if changed:
        metrics.catalog_items.set(len(catalog.index))


def create_app(settings: Settings, runtime: Runtime) -> faust.App:
    s = settings
    app = new_app(s, s.app_id)

    def topic(name: str) -> faust.TopicT:
        return raw_topic(app, s, name)

    items, activity = topic(s.topic_items), topic(s.topic_activity)
    feedback = topic(s.topic_feedback)
    recommendations, dead_letters = topic(s.topic_recommendations), topic(s.topic_dead_letters)

    async def emit(out: Outputs) -> None:
        for key, value in out.dead_letters:
            await dead_letters.send(key=key, value=dumps(value))
        for user_id, value in out.recommendations:
            await recommendations.send(key=user_id.encode(), value=dumps(value))

    @app.agent(items, name="items")
    async def item_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, s, runtime, s.topic_items,
                          lambda r: runtime.processor.process_items(r), emit)

    @app.agent(activity, name="activity")
    async def activity_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, s, runtime, s.topic_activity,
                          lambda r: runtime.processor.process_activity(r), emit)

    @app.agent(feedback, name="feedback")
    async def feedback_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, s, runtime, s.topic_feedback,
                          lambda r: runtime.processor.process_feedback(r), emit)

    @app.timer(s.catalog_sync_interval_s)
    async def sync_catalog() -> None:
        await runtime.ready()
        await sync_catalog_changes(runtime.catalog, runtime.metrics)

    @app.timer(s.popularity_refresh_s)
    async def refresh_popularity() -> None:
        """The deployment-wide popularity and the co-visits other workers counted."""
        await runtime.ready()
        try:
            await runtime.catalog.refresh_popularity()
            await runtime.catalog.refresh_covisits()
        except TRANSIENT as exc:
            log("popularity_refresh_failed", error=repr(exc))

    @app.timer(s.model_poll_interval_s)
    async def watch_model() -> None:
        """Promotions reach every worker within one interval; ranking goes on meanwhile."""
        await runtime.follow_model()

    @app.task
    async def declare_outputs() -> None:
        """Output topics exist before the first record is sent (with our partition count)."""
        for t in (recommendations, dead_letters):
            await t.maybe_declare()

    register_views(app, runtime)
    return app
