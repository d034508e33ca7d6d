"""Faust's aiokafka transport with a configurable consumer fetch wait, and a quieter
Monitor.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for the worker consumer.
Apache Kafka answers a fetch as soon as data arrives, so there it costs nothing;
a broker that holds every fetch for the full wait (tansu, the embedded broker)
adds up to that much latency to every event. ``kafka_fetch_max_wait_ms`` sets it.

Faust's Monitor (its main sensor, the ``Monitor`` setting) records statistics for every
message and event (counters by stream and task, timings, a deque of runtimes) that only
Faust's own statistics pages read, and those are off here: ``QuietMonitor`` skips that
per-event bookkeeping (13% of a pass-through's throughput) and keeps everything else.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Dict, Optional

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, EventT, Message, StreamT, TransportT

__all__ = ["App", "Monitor", "QuietMonitor"]


class QuietMonitor(Monitor):
    """Faust's Monitor without its per-message and per-event statistics.

    Kept: when each partition's stream last took an event (``stream_inbound_time``,
    which Faust's slow-processing diagnostics read), commits, rebalances, assignment
    and end offsets. Skipped: message/event counters and timings and send statistics,
    read only by Faust's statistics pages (off: ``web_stats_enabled=False``)."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT,
                           event: EventT) -> Optional[Dict]:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp: TP, offset: int, stream: StreamT, event: EventT,
                            state: Optional[Dict] = None) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


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
