"""Plain aiokafka producing and consuming for the CLI, demo, benchmarks and tests."""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.connections import KafkaConfig, kafka_config

Kafka = str | KafkaConfig  # a bare bootstrap string connects in plaintext


async def ensure_topics(kafka: Kafka, names: Iterable[str], partitions: int,
                        replication: int) -> None:
    """Create topics up front so producers never race the workers' declaration."""
    admin = AIOKafkaAdminClient(**kafka_config(kafka).client_args())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, replication) for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


class Producer:
    """JSON values keyed by a field of the value; batches by linger."""

    def __init__(self, kafka: Kafka) -> None:
        self._p = AIOKafkaProducer(**kafka_config(kafka).client_args(), linger_ms=5,
                                   max_batch_size=256 * 1024, acks="all")

    async def __aenter__(self) -> "Producer":
        try:
            await self._p.start()
        except BaseException:
            await self._p.stop()  # no "unclosed producer" on top of the real error
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._p.flush()
        await self._p.stop()

    async def send(self, topic: str, value: Mapping[str, Any] | bytes, key: str | None) -> None:
        await self._p.send(topic, encoded(value), key=key.encode() if key is not None else None)

    async def flush(self) -> None:
        await self._p.flush()

    async def send_all(self, topic: str, values: Iterable[Mapping[str, Any]],
                       key_field: str | None) -> int:
        n = 0
        for value in values:
            key = str(value[key_field]) if key_field and value.get(key_field) is not None else None
            await self.send(topic, value, key)
            n += 1
        await self._p.flush()
        return n


def encoded(value: Mapping[str, Any] | bytes) -> bytes:
    """A record's value as ``Producer.send`` writes it (JSON, or the bytes as given)."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


async def consume(kafka: Kafka, topic: str, from_beginning: bool = True,
                  idle_timeout: float | None = None, fetch_max_wait_ms: int = 50
                  ) -> AsyncIterator[tuple[bytes | None, Any]]:
    """Yield (key, decoded JSON or raw bytes) from every partition, outside any group.

    Stops after ``idle_timeout`` seconds without a record (None: never). A broker that
    holds fetches (tansu) delays each record by up to ``fetch_max_wait_ms``; latency
    benchmarks read with a short one so the reader does not add to what they measure.
    """
    consumer = AIOKafkaConsumer(topic, **kafka_config(kafka).client_args(),
                                group_id=None, fetch_max_wait_ms=fetch_max_wait_ms,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                enable_auto_commit=False)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    try:
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            got = False
            for records in batch.values():
                for rec in records:
                    got = True
                    try:
                        value: Any = json.loads(rec.value) if rec.value is not None else None
                    except ValueError:
                        value = rec.value
                    yield rec.key, value
            now = time.monotonic()
            if got:
                last = now
            elif idle_timeout is not None and now - last > idle_timeout:
                return
    finally:
        await consumer.stop()
