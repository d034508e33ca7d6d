"""Faust's aiokafka transport with a configurable consumer fetch wait.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for the worker consumer.
Apache Kafka answers a fetch as soon as data arrives, so there it costs nothing;
a broker that holds every fetch for the full wait (tansu, the embedded broker)
adds up to that much latency to every event. ``kafka_fetch_max_wait_ms`` sets it.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT


def _transport_class(fetch_max_wait_ms: int) -> type[driver.Transport]:
    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # AIOKafkaConsumer.start() builds its fetcher from this attribute.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WorkerConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = WorkerConsumer

    return Transport


class App(faust.App):
    """faust.App whose Kafka consumer uses ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self._transport_cls = _transport_class(fetch_max_wait_ms)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return self._transport_cls(self.conf.broker_consumer, self)
