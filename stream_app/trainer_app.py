"""The trainer process: a Faust app of its own (consumer group ``<app id>-trainer``).

One agent reads activity and feedback together and turns them into examples
(``trainer.py``); a timer starts a round whenever the batch is full or has waited
long enough, trains it off the event loop, and announces the outcome on the
model-updates topic. Workers pick promoted versions up from Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Sequence

import faust
from faust.web import Request, Response, View

from stream_app.app import (Messages, dead_letter_messages, new_app, raw_topic, run_batches,
                            sync_catalog_changes)
from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record, dumps
from stream_app.encoder import Encoder
from stream_app.faults import is_infrastructure, passed_over
from stream_app.logs import log
from stream_app.pipeline import Outputs, Rejected
from stream_app.runtime import ProcessRuntime
from stream_app.store import TRAINER_SCOPE, Store, connect
from stream_app.trainer import Trainer, outcome
from stream_app.versions import Registry
from stream_app.web import denied, register_health, register_metrics


class TrainerRuntime(ProcessRuntime):
    """The trainer process: its Trainer, its lag and its last round."""

    trainer: Trainer

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        super().__init__(settings, encoder)
        self.lag_s = 0.0
        self.last_round: dict[str, Any] | None = None

    async def _start(self) -> None:
        s = self.settings
        self.redis = client = connect(s.redis())
        store = Store.for_settings(client, s, scope=TRAINER_SCOPE)
        catalog = Catalog.for_settings(store, self.encoder.version, self.encoder.dim,
                                        s)
        self.trainer = Trainer(s, store, self.encoder, catalog,
                               Registry(client, s.key_prefix, self.encoder.version), self.metrics)
        await self.trainer.start()
        log("trainer_ready", catalog_items=len(catalog.index),
            model_version=self.trainer.current.version)

    async def observe(self, records: Sequence[Record]) -> Outputs:
        await self._room_for_examples()
        self.lag_s = max(0.0, time.time() - min(r.timestamp for r in records))
        self.metrics.trainer_lag_seconds.set(self.lag_s)
        return await self.trainer.observe(records)

    async def _room_for_examples(self) -> None:
        """Back-pressure: while ``trainer_max_pending`` examples wait for a round, consume
        nothing more (Kafka keeps the rest; the lag grows, not the memory)."""
        limit = self.settings.trainer_max_pending
        if limit <= 0 or len(self.trainer.pending) < limit:
            return
        log("trainer_backpressure", level=logging.WARNING, pending=len(self.trainer.pending),
            limit=limit)
        self.metrics.trainer_backpressure.inc()
        while len(self.trainer.pending) >= limit:
            await asyncio.sleep(0.1)

    async def publish(self, topic: str, out: Outputs, batch_records: int, seconds: float) -> None:
        self.counts.update(out.counts)
        self.counts["records"] += batch_records
        for rejected in feedback_rejected(self.settings, out):
            self.metrics.dead_letters.labels(rejected.record.topic, rejected.reason).inc()
        self.metrics.batch_seconds.labels(topic).observe(seconds)
        self.metrics.batch_size.labels(topic).observe(batch_records)
        self.metrics.trainer_pending.set(len(self.trainer.pending))

    async def train_if_due(self) -> dict[str, Any] | None:
        """A round when one is due; a failed round is logged and its examples dropped."""
        if not self.trainer.due():
            return None
        try:
            announcement = await self.trainer.round()
        except Exception as exc:  # noqa: BLE001 - the trainer keeps consuming
            log("training_round_failed", error=repr(exc),
                level=logging.WARNING if is_infrastructure(exc) else logging.ERROR)
            self.metrics.trainer_rounds.labels("failed").inc()
            return None
        if announcement is not None:
            self.last_round = announcement
            self.metrics.trainer_rounds.labels(outcome(announcement)).inc()
            self.metrics.trainer_round_seconds.observe(announcement["round_seconds"])
            self.metrics.trainer_pending.set(len(self.trainer.pending))
        return announcement

    def describe(self) -> dict[str, Any]:
        return {"model_version": self.trainer.current.version}

    def memory(self) -> dict[str, int]:
        """Resident bytes of the trainer and its training process, also as a gauge."""
        memory = self.trainer.memory()
        for process, value in memory.items():
            self.metrics.trainer_memory_bytes.labels(process).set(value)
        return memory

    def stats(self) -> dict[str, Any]:
        return {"model_version": self.trainer.current.version,
                "memory_bytes": self.memory(),
                "uptime_s": round(time.time() - self.started_at, 1),
                "lag_s": round(self.lag_s, 3), "pending_examples": len(self.trainer.pending),
                "training": self.trainer.training,
                "buffered_examples": len(self.trainer.buffer), "counts": dict(self.counts),
                "last_round": self.last_round}


def feedback_rejected(s: Settings, out: Outputs) -> list[Rejected]:
    """The bad feedback records of a trainer's batch that the trainer dead-letters: all of
    them, unless the workers read feedback too (``worker_feedback``)."""
    return [] if s.worker_feedback else [r for r in out.rejected
                                         if r.record.topic == s.topic_feedback]


def create_trainer_app(settings: Settings, runtime: TrainerRuntime) -> faust.App:
    s = settings
    app = new_app(s, f"{s.app_id}-trainer")
    inputs = raw_topic(app, s, s.topic_activity, s.topic_feedback)
    updates = raw_topic(app, s, s.topic_model_updates)

    dead_letters = raw_topic(app, s, s.topic_dead_letters)

    def messages(out: Outputs) -> Messages:
        """Bad feedback to dead letters, confirmed by the broker before the batch's input
        is acknowledged (with ``worker_feedback`` the workers send them instead); bad
        activity is the workers' to dead-letter, the trainer only skips it."""
        return dead_letter_messages(dead_letters, feedback_rejected(s, out),
                                    s.dead_letter_payload_bytes)

    @app.agent(inputs, name="trainer")
    async def trainer_agent(stream: faust.StreamT) -> None:
        await run_batches(stream, s, runtime, "trainer", lambda r, _: runtime.observe(r),
                          messages, within=s.trainer_batch_within_s)

    @app.timer(1.0)
    async def train() -> None:
        await runtime.ready()
        runtime.memory()
        announcement = await runtime.train_if_due()
        if announcement is not None:
            # the registry holds the version; the announcement is for people
            with passed_over("announcement_failed"):
                await updates.send(key=announcement["version"].encode(),
                                   value=dumps(announcement))

    @app.timer(s.catalog_sync_interval_s)
    async def sync_catalog() -> None:
        """New and deleted items reach the trainer's table as they reach the workers'."""
        await runtime.ready()
        await sync_catalog_changes(runtime.trainer.catalog, runtime.metrics)

    @app.on_before_shutdown.connect
    async def stop_training(app: faust.App, **kwargs: Any) -> None:
        runtime.stopping = True
        if runtime.ready_now():
            runtime.trainer.close()

    @app.task
    async def declare_outputs() -> None:
        for t in (updates, dead_letters):
            await t.maybe_declare()

    register_health(app, runtime)

    @app.page("/stats")
    async def stats(web: View, request: Request) -> Response:
        if (refused := denied(web, request, s.api_token)) is not None:
            return refused
        if not runtime.ready_now():
            return web.json({"status": "starting"}, status=503)
        return web.json(runtime.stats())

    register_metrics(app, runtime.metrics)
    return app
