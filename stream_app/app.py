"""The Faust app: topics, the three agents, the catalog sync timer and the web views."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, Sequence

import faust
from faust.types import EventT

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record, dumps
from stream_app.kafka_transport import App, Monitor, QuietMonitor
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.faults import Backoff, infrastructure_cause, is_infrastructure, passed_over
from stream_app.health import Health
from stream_app.pipeline import Early, Outputs, Rejected, isolate
from stream_app.runtime import Runtime
from stream_app.web import register_views


def broker_url(servers: str) -> str:
    hosts = [h.strip() for h in (servers or "127.0.0.1:9092").split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def to_record(event: EventT) -> Record:
    m = event.message
    return Record(topic=m.topic, partition=m.partition, offset=m.offset,
                  timestamp=m.timestamp if m.timestamp is not None else time.time(),
                  key=m.key, value=m.value)


def new_app(s: Settings, app_id: str) -> faust.App:
    """A Faust app with raw bytes in and out and this deployment's Kafka settings.

    Tuned for throughput (docs/scaling.md, "Faust throughput"): Faust's per-event
    statistics off unless ``faust_event_stats``, the producer's batches as large as
    ``kafka_producer_batch_bytes``, its linger ``kafka_producer_linger_ms``."""
    return App(
        app_id,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        broker=broker_url(s.kafka_bootstrap_servers),
        broker_credentials=s.kafka().faust_credentials(),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=s.kafka_producer_linger_ms / 1000.0,
        producer_max_batch_size=s.kafka_producer_batch_bytes,
        Monitor=Monitor if s.faust_event_stats else QuietMonitor,
        broker_session_timeout=s.kafka_session_timeout_s,
        broker_heartbeat_interval=s.kafka_heartbeat_interval_s,
        web_port=s.web_port,
        web_bind=s.web_host,
        # Faust's own pages (router, tables, graph, statistics) are not for the public
        web_router_enabled=False, web_tables_enabled=False, web_graph_enabled=False,
        web_stats_enabled=False, web_metrics_enabled=False,
        datadir=(os.path.join(s.data_dir, app_id) if s.data_dir
                 else tempfile.mkdtemp(prefix="stream-app-")),
        autodiscover=False,
        store="memory://",
    )


def raw_topic(app: faust.App, s: Settings, *names: str) -> faust.TopicT:
    return app.topic(*names, partitions=s.topic_partitions, key_serializer="raw",
                     value_serializer="raw")


class BatchRuntime(Protocol):
    """What a batch loop needs from its process: readiness, retries and accounting."""

    health: Health
    stopping: bool

    async def ready(self) -> None: ...

    def on_retry(self, topic: str, cause: str, error: str) -> None: ...

    def on_progress(self, topic: str, records: Sequence[Record]) -> None: ...

    async def publish(self, topic: str, out: Outputs, batch_records: int,
                      seconds: float) -> None: ...


Messages = list[tuple[faust.TopicT, bytes | None, bytes]]  # (topic, key, value) to send


class Handover:
    """One attempt's outputs on their way to the broker. ``early``: the recommendations
    known so far go to the producer at once (a worker calls it as soon as a batch is
    ranked, and counts popularity and co-visits while they travel); ``finish``: the rest
    (dead letters, recommendations not handed over yet), then every record's
    acknowledgement is awaited: the batch's input is acknowledged only after that.

    A failure of ``early`` itself that is not the infrastructure's (a bug in making the
    messages) is raised by ``finish``, as when everything was sent at the end: the batch
    is not taken for one with a bad record (``isolate``) after its states were written."""

    def __init__(self, messages: Callable[[Outputs], Messages]) -> None:
        self.messages = messages
        self.pending: list[asyncio.Future] = []
        self.handed = 0  # the recommendations already handed over, from the first
        self.failed: Exception | None = None

    async def early(self, out: Outputs) -> None:
        try:
            await self._send(self.messages(
                Outputs(recommendations=out.recommendations[self.handed:])))
        except Exception as exc:  # noqa: BLE001 - classified: the infrastructure's raises
            if is_infrastructure(exc):
                raise
            self.failed = exc
            return
        self.handed = len(out.recommendations)

    async def finish(self, out: Outputs) -> None:
        if self.failed is not None:
            raise self.failed
        await self._send(self.messages(Outputs(
            recommendations=out.recommendations[self.handed:], rejected=out.rejected)))
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)

    def abandon(self) -> None:
        """The attempt failed or was cancelled: what it handed over may still arrive (the
        retry sends it again: recommendations are at least once); not waited for."""
        for future in self.pending:
            future.add_done_callback(_retrieved)
        self.pending = []

    async def _send(self, messages: Messages) -> None:
        """Every record handed to the producer, each acknowledgement's future kept as soon
        as it exists (``abandon`` takes them all, also after a send that raised).

        Straight to the app's producer (``ProducerT.send``, partitioned by key as
        ``Topic.send`` does): ``Topic.send`` passes each record through Faust's
        ``maybe_start_producer``, whose stampede guard yields to the event loop on every
        call, so aiokafka's sender went off with one record per produce request while the
        batch was still being handed over (2-3x slower; docs/scaling.md, "Faust
        throughput")."""
        if not messages:
            return
        producer = await messages[0][0].app.maybe_start_producer()
        for topic, key, value in messages:
            self.pending.append(await producer.send(topic.get_topic_name(), key, value,
                                                    None, None, None))


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # taken, so asyncio does not report it as never retrieved


async def run_batches(stream: faust.StreamT, s: Settings, runtime: BatchRuntime, name: str,
                      process: Callable[[Sequence[Record], Early | None], Awaitable[Outputs]],
                      messages: Callable[[Outputs], Messages],
                      within: float | None = None) -> None:
    """Micro-batches whose input is acknowledged only after the broker confirmed their
    outputs (``messages``: the records an ``Outputs`` sends; ``process`` may hand its
    recommendations over early, see ``Handover``). An infrastructure fault retries the
    batch (backoff, jitter) until it goes through; a batch left unfinished at shutdown is
    never acknowledged, so the next owner of the partition processes it again (state
    updates are idempotent). ``within``: the longest wait to fill a batch (default
    ``batch_within_s``; see ``take_batches``)."""
    try:
        await runtime.ready()
    except asyncio.CancelledError:
        if runtime.stopping:  # shut down while waiting for Redis: nothing to report
            return
        raise
    backoff = Backoff(s.retry_base_s, s.retry_max_s)
    wait = s.batch_within_s if within is None else within
    async for events in take_batches(stream, s.batch_size, wait):
        records = [to_record(e) for e in events]
        attempt = 0
        handover: Handover | None = None
        try:
            while True:
                started = time.perf_counter()
                handover = Handover(messages)
                try:
                    try:
                        out = await process(records, handover.early)
                    except Exception as exc:  # noqa: BLE001 - never stop the worker
                        if is_infrastructure(exc):
                            raise
                        log("batch_failed", level=logging.ERROR, topic=name,
                            records=len(records), error=repr(exc))
                        handover.abandon()
                        handover = Handover(messages)  # one record at a time, sent at the end
                        out = await isolate(lambda one: process(one, None), records)
                    await handover.finish(out)
                    break
                except Exception as exc:  # noqa: BLE001 - classified below
                    handover.abandon()
                    cause = infrastructure_cause(exc)
                    if cause is None:
                        raise
                    attempt += 1
                    runtime.on_retry(name, cause, repr(exc))
                    log("batch_retry", level=logging.WARNING, topic=name, records=len(records),
                        attempt=attempt, cause=cause, error=repr(exc))
                    await asyncio.sleep(backoff.delay(attempt))
        except BaseException:
            if handover is not None:  # cancelled (shutdown): what it sent is not waited for
                handover.abandon()
            withhold(events)
            raise
        runtime.on_progress(name, records)
        with passed_over("publish_failed", topic=name):  # the batch is done; counters only
            await runtime.publish(name, out, len(records), time.perf_counter() - started)


# how long a started batch waits for a record its stream's queue showed as ready (it comes
# at once; the bound only matters when a rebalance clears the queue in between)
READY_GRACE_S = 0.002


async def take_batches(stream: faust.StreamT, most: int,
                       within: float) -> AsyncIterator[list[EventT]]:
    """The stream in micro-batches of at most ``most`` events, each acknowledged once the
    caller is done with it (its next step, or the generator's close).

    ``within`` > 0: Faust's ``take_events``, which waits up to ``within`` seconds for a
    batch to fill. 0: a batch goes as soon as no further record is ready in the stream's
    queue, with no wait: one record alone on a quiet stream, and whatever arrived while the
    batch before was processed on a busy one (batches grow with the load, up to ``most``).

    The next record is read by a task of its own, so a started batch never waits on an
    empty queue: a rebalance or a shutdown clears the queues and then waits for every
    event taken to be acknowledged, which a batch held back would never be."""
    if within > 0:
        async for events in stream.take_events(most, within=within):
            yield events
        return
    queue = getattr(stream.channel, "queue", None)
    source = stream.events().__aiter__()

    async def following() -> EventT | None:
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return None

    acks, stream.enable_acks = stream.enable_acks, False  # acknowledged below, per batch
    batch: list[EventT] = []
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(following())
            if not batch:
                await asyncio.wait({pending})  # nothing held: as long as it takes
            elif len(batch) < most and queue is not None and not queue.empty():
                await asyncio.wait({pending}, timeout=READY_GRACE_S)
            if pending.done() and len(batch) < most:
                event, pending = pending.result(), None
                if event is not None:
                    batch.append(event)
                    continue
                if not batch:
                    return  # the stream ended
            try:
                yield batch
            finally:
                done, batch = batch, []
                for taken in done:
                    await stream.ack(taken)
            if pending is None:  # the stream ended with that batch
                return
    finally:
        stream.enable_acks = acks
        if pending is not None:
            pending.cancel()


def withhold(events: Sequence[EventT]) -> None:
    """Keep an unfinished batch from being committed: Faust acknowledges a batch when its
    loop body ends, even by an exception or a cancellation at shutdown, and an already
    acknowledged message is never added to the offsets it commits."""
    for event in events:
        event.message.acked = True


def dead_letter_messages(topic: faust.TopicT, rejected: Sequence[Rejected],
                         payload_bytes: int) -> Messages:
    """The messages of rejected records: key, and the dead letter with at
    most ``payload_bytes`` of the record's value."""
    return [(topic, key, dumps(value))
            for key, value in (r.letter(payload_bytes) for r in rejected)]


async def sync_catalog_changes(catalog: Catalog, metrics: Metrics) -> None:
    """One step of tailing the catalog change log; Redis down only skips this step."""
    with passed_over("catalog_sync_failed"):
        if await catalog.sync():
            metrics.catalog_items.set(len(catalog.index))


def create_app(settings: Settings, runtime: Runtime) -> faust.App:
    s = settings
    app = new_app(s, s.app_id)

    def topic(name: str) -> faust.TopicT:
        return raw_topic(app, s, name)

    items, activity = topic(s.topic_items), topic(s.topic_activity)
    recommendations, dead_letters = topic(s.topic_recommendations), topic(s.topic_dead_letters)

    def messages(out: Outputs) -> Messages:
        """Dead letters and recommendations."""
        return (dead_letter_messages(dead_letters, out.rejected, s.dead_letter_payload_bytes)
                + [(recommendations, user_id.encode(), dumps(value))
                   for user_id, value in out.recommendations])

    @app.agent(items, name="items")
    async def item_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, s, runtime, s.topic_items,
                          lambda r, _: runtime.processor.process_items(r), messages)

    @app.agent(activity, name="activity")
    async def activity_agent(stream: faust.StreamT) -> None:
        # the recommendations leave as soon as the batch is ranked, before its counts
        await run_batches(stream, s, runtime, s.topic_activity,
                          lambda r, early: runtime.processor.process_activity(r, early),
                          messages)

    if s.worker_feedback:  # else the trainer dead-letters bad feedback
        @app.agent(topic(s.topic_feedback), name="feedback")
        async def feedback_agent(stream: faust.StreamT) -> None:
            await run_batches(stream, s, runtime, s.topic_feedback,
                              lambda r, _: runtime.processor.process_feedback(r), messages)

    @app.timer(s.catalog_sync_interval_s)
    async def sync_catalog() -> None:
        await runtime.ready()
        await sync_catalog_changes(runtime.catalog, runtime.metrics)

    @app.timer(s.popularity_refresh_s)
    async def refresh_popularity() -> None:
        """The popularity values and the co-visits other workers counted (their logs)."""
        await runtime.ready()
        with passed_over("popularity_refresh_failed"):
            await runtime.catalog.refresh_popularity(s.popularity_reload_s)
            await runtime.catalog.refresh_covisits()

    @app.timer(s.model_poll_interval_s)
    async def watch_model() -> None:
        """Promotions reach every worker within one interval; ranking goes on meanwhile."""
        await runtime.follow_model()

    @app.task
    async def declare_outputs() -> None:
        """Output topics exist before the first record is sent (with our partition count)."""
        for t in (recommendations, dead_letters):
            await t.maybe_declare()

    @app.on_before_shutdown.connect
    async def stop_waiting(app: faust.App, **kwargs: Any) -> None:
        runtime.stopping = True

    register_views(app, runtime)
    return app
