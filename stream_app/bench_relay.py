"""`stream-app bench --relay`: what relaying Kafka records costs through the raw client
and through Faust, on one broker, in one run.

The same pre-produced flood of N activity-sized records (~150 bytes, keyed by user) goes
through, each in a process of its own (a clean interpreter, as a worker runs):

- ``raw``: an aiokafka relay: ``getmany`` -> a send per record -> wait for every
  delivery -> commit; the client's ceiling;
- ``faust``: a bare Faust agent as Faust is commonly written, forwarding each record
  (``async for event in stream.events(): await topic.send(...)``) on an app with
  Faust's default settings (raw bytes, ``acks=all``, the configured fetch wait): what
  ``app.new_app`` was before it was tuned;
- ``tuned``: a Faust pass-through that runs the worker's own batch loop
  (``app.run_batches`` over ``app.take_batches``, each batch's outputs confirmed by
  the broker (``app.Handover``) before the batch is acknowledged) on ``app.new_app``, i.e.
  the worker without the model and Redis.

Throughput comes from the broker timestamps of the relayed records (the relay's send
times), first to last, so start-up and the group join are left out. Then records are
sent at a fixed rate (default: half that relay's maximum, at most 5,000/s) for a few
seconds and a reader measures end-to-end latency, from handing a record to the producer
to reading its relayed copy (the reader polls with a 5 ms fetch wait).

Other benchmarks call :func:`measure_relays` with a running broker's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Sequence

from stream_app.config import Settings
from stream_app.kafka_io import Kafka, ensure_topics

KINDS = ("raw", "faust", "tuned")
LABELS = {"raw": "raw aiokafka relay", "faust": "bare Faust agent, per record",
          "tuned": "tuned Faust agent, batches"}
MAX_PACED_RATE = 5000.0  # the paced sender and its reader share the machine with the relay


@dataclass
class RelayFigures:
    kind: str
    events: int
    events_per_s: float
    seconds: float = 0.0  # first to last relayed record of the flood
    latency_rate: float = 0.0  # events/s of the paced run (0: none)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max


# --- the flood and the measurements (parent side) ------------------------------------------

def flood_value(n: int, rng: random.Random, sent: float | None = None) -> bytes:
    """An activity event of the usual size (about 150 bytes); ``sent``: wall clock."""
    event: dict[str, Any] = {"event_id": f"relay-{n}", "user_id": f"user-{rng.randrange(500)}",
                             "type": rng.choice(("view", "click", "like", "purchase")),
                             "item_id": str(rng.randrange(10000)), "ts": 1.7e9 + n}
    if sent is not None:
        event["sent"] = sent
    return json.dumps(event).encode()


async def produce_flood(kafka: Kafka, topic: str, events: int, seed: int = 1) -> None:
    """``events`` records keyed by user into ``topic``, all confirmed on return."""
    from aiokafka import AIOKafkaProducer

    from stream_app.connections import kafka_config

    rng = random.Random(seed)
    producer = AIOKafkaProducer(**kafka_config(kafka).client_args(), linger_ms=5,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    try:
        for n in range(events):
            await producer.send(topic, flood_value(n, rng), key=f"user-{n % 500}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def collect_timestamps(kafka: Kafka, topic: str, count: int,
                             child: subprocess.Popen | None = None,
                             timeout: float = 600.0) -> list[float]:
    """Broker timestamps (seconds) of the first ``count`` records of ``topic``, read as
    they arrive. (Counting by end offsets is not portable: tansu's ListOffsets does not
    give record counts.)"""
    from aiokafka import AIOKafkaConsumer

    from stream_app.connections import kafka_config

    consumer = AIOKafkaConsumer(topic, **kafka_config(kafka).client_args(), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=100)
    await consumer.start()
    out: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count:
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"the relay process exited with code {child.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(out)} of {count} records after {timeout}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batch.values():
                out.extend(r.timestamp / 1000.0 for r in records)
    finally:
        await consumer.stop()
    return out[:count]


def flood_rate(stamps: Sequence[float]) -> tuple[float, float]:
    """(events/s, seconds) from the relayed records' timestamps, first to last."""
    span = max(stamps) - min(stamps)
    return (round((len(stamps) - 1) / span, 1) if span > 0 else float("inf")), round(span, 3)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    lat = sorted(values)
    if not lat:
        return {}

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)
    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(lat[-1], 1)}


async def paced_latency(kafka: Kafka, topic_in: str, topic_out: str, rate: float,
                        seconds: float, seed: int = 2) -> dict[str, float]:
    """Send at ``rate`` for ``seconds`` (5 ms ticks), read the relayed copies, and return
    latency percentiles in ms, from handing a record to the producer to reading it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from stream_app.connections import kafka_config

    args = kafka_config(kafka).client_args()
    reader = AIOKafkaConsumer(**args, group_id=None, enable_auto_commit=False,
                              fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(**args, linger_ms=0, acks="all")
    await reader.start()
    await producer.start()
    received: dict[str, float] = {}
    try:
        tps = [TopicPartition(topic_out, p)
               for p in sorted(reader.partitions_for_topic(topic_out) or ())]
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        for tp in tps:
            await reader.position(tp)  # resolved before the first paced record goes out

        async def read() -> None:
            while True:
                batch = await reader.getmany(timeout_ms=200)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        value = json.loads(r.value)
                        if "sent" in value:
                            received[value["event_id"]] = now - value["sent"]

        reading = asyncio.create_task(read())
        rng = random.Random(seed)
        total = max(1, int(rate * seconds))
        start = time.monotonic()
        sent = 0
        try:
            while sent < total:
                due = min(total, int((time.monotonic() - start) * rate) + 1)
                while sent < due:
                    value = flood_value(10**9 + sent, rng, sent=time.time())
                    await producer.send(topic_in, value, key=f"user-{sent % 500}".encode())
                    sent += 1
                await asyncio.sleep(0.005)
            await producer.flush()
            deadline = time.monotonic() + 30
            while len(received) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            reading.cancel()
        if len(received) < total:
            raise TimeoutError(f"{total - len(received)} of {total} paced records not relayed")
    finally:
        await producer.stop()
        await reader.stop()
    return percentiles([v * 1000 for v in received.values()])


async def measure_one(s: Settings, kind: str, topic_in: str, events: int, run: str,
                      rate: float | None = None, latency_s: float = 4.0,
                      timeout: float = 600.0, profile: str | None = None) -> RelayFigures:
    """One relay process of ``kind`` over the flood of ``events`` records already in
    ``topic_in`` (its own: the paced records go there too): its throughput, then
    (``latency_s`` > 0) its latency at ``rate`` (None: half its own maximum, at most
    ``MAX_PACED_RATE``). ``profile``: a cProfile output file for the relay process."""
    topic_out = f"relay-out-{kind}-{run}"
    await ensure_topics(s.kafka(), [topic_out], s.topic_partitions, s.topic_replication)
    with tempfile.TemporaryFile() as log:
        child = start_child(s, kind, topic_in, topic_out, f"relay-{kind}-{run}", log,
                            profile=profile)
        try:
            stamps = await collect_timestamps(s.kafka(), topic_out, events, child, timeout)
            per_s, seconds = flood_rate(stamps)
            figures = RelayFigures(kind, events, per_s, seconds)
            if latency_s > 0:
                figures.latency_rate = round(rate or min(MAX_PACED_RATE, per_s / 2), 1)
                figures.latency_ms = await paced_latency(s.kafka(), topic_in, topic_out,
                                                         figures.latency_rate, latency_s)
            return figures
        except BaseException:
            log.seek(0)
            print(f"--- {kind} relay log (tail) ---\n"
                  + log.read().decode(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            stop_child(child)


async def measure_relays(s: Settings, events: int = 20000, kinds: Sequence[str] = KINDS,
                         rate: float | None = None, latency_s: float = 4.0,
                         profile_dir: str | None = None) -> dict[str, Any]:
    """The same flood produced up front into one input topic per relay, then each relay
    in turn over its copy: a dict with the settings that matter, each kind's
    :class:`RelayFigures` (as a dict) and each kind's events/s as a ratio to the raw
    relay's. ``s`` must name a running broker (``kafka_bootstrap_servers``);
    ``latency_s`` 0 skips the paced runs; the topics are deleted afterwards."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown relay {sorted(unknown)}; one of {', '.join(KINDS)}")
    run = uuid.uuid4().hex[:6]
    inputs = {kind: f"relay-in-{kind}-{run}" for kind in kinds}
    await ensure_topics(s.kafka(), inputs.values(), s.topic_partitions, s.topic_replication)
    for topic in inputs.values():
        await produce_flood(s.kafka(), topic, events)
    results: dict[str, Any] = {
        "events": events, "partitions": s.topic_partitions,
        "settings": {k: getattr(s, k, None) for k in (
            "batch_size", "batch_within_s", "kafka_fetch_max_wait_ms",
            "kafka_producer_batch_bytes", "kafka_producer_linger_ms", "faust_event_stats")}}
    try:
        for kind in kinds:
            profile = os.path.join(profile_dir, f"{kind}.prof") if profile_dir else None
            results[kind] = asdict(await measure_one(s, kind, inputs[kind], events, run, rate,
                                                     latency_s, profile=profile))
    finally:
        await _delete_topics(s.kafka(), [*inputs.values()]
                             + [f"relay-out-{kind}-{run}" for kind in kinds])
    if "raw" in results:
        raw = results["raw"]["events_per_s"]
        results["ratios"] = {k: round(results[k]["events_per_s"] / raw, 3)
                             for k in kinds if k != "raw"}
    return results


async def _delete_topics(kafka: Kafka, names: list[str]) -> None:
    """Best effort: a shared broker keeps no benchmark topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    from stream_app.connections import kafka_config

    admin = AIOKafkaAdminClient(**kafka_config(kafka).client_args())
    try:
        await admin.start()
        await admin.delete_topics(names)
    except Exception:  # noqa: BLE001 - leftovers are harmless
        pass
    finally:
        await admin.close()


# --- the relay processes (child side) ------------------------------------------------------

def start_child(s: Settings, kind: str, topic_in: str, topic_out: str, group: str,
                log: IO[bytes] | int = subprocess.DEVNULL,
                profile: str | None = None) -> subprocess.Popen:
    """``python -m stream_app.bench_relay KIND IN OUT GROUP`` with ``s`` in its
    environment (under cProfile when ``profile`` names an output file)."""
    if kind not in KINDS:
        raise ValueError(f"unknown relay {kind!r}; one of {', '.join(KINDS)}")
    env = {**os.environ, **s.env(), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    return subprocess.Popen(cmd + ["-m", "stream_app.bench_relay", kind, topic_in, topic_out,
                                   group], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_child(child: subprocess.Popen, timeout: float = 30.0) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


async def raw_relay(s: Settings, topic_in: str, topic_out: str, group: str,
                    stop: asyncio.Event | None = None) -> None:
    """Consume a batch, send each record on, wait for every delivery, commit."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    args = s.kafka().client_args()
    consumer = AIOKafkaConsumer(topic_in, **args, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms)
    producer = AIOKafkaProducer(**args, acks="all")
    await consumer.start()
    await producer.start()
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            pending = [await producer.send(topic_out, r.value, key=r.key)
                       for records in batch.values() for r in records]
            if pending:
                await asyncio.gather(*pending)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def baseline_app(s: Settings, app_id: str) -> Any:
    """A Faust app as the worker's was before tuning: Faust's defaults, raw bytes,
    ``acks=all`` and the configured fetch wait (tansu would hold each fetch 1.5 s)."""
    from stream_app.app import broker_url
    from stream_app.kafka_transport import App

    return App(app_id, fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
               broker=broker_url(s.kafka_bootstrap_servers),
               broker_credentials=s.kafka().faust_credentials(),
               key_serializer="raw", value_serializer="raw",
               topic_partitions=s.topic_partitions,
               topic_replication_factor=s.topic_replication,
               consumer_auto_offset_reset="earliest", producer_acks=-1,
               web_enabled=False, datadir=tempfile.mkdtemp(prefix="stream-app-relay-"),
               autodiscover=False, store="memory://")


class _PassThrough:
    """The BatchRuntime of the tuned relay: always ready, nothing to account."""

    stopping = False

    def __init__(self) -> None:
        from stream_app.health import Health

        self.health = Health(60.0, 600.0)

    async def ready(self) -> None:
        return None

    def on_retry(self, topic: str, cause: str, error: str) -> None:
        pass

    def on_progress(self, topic: str, records: Any) -> None:
        pass

    async def publish(self, topic: str, out: Any, batch_records: int, seconds: float) -> None:
        pass


def faust_relay_app(s: Settings, kind: str, topic_in: str, topic_out: str, group: str) -> Any:
    """The Faust app of the ``faust`` or ``tuned`` relay (not started)."""
    import faust

    from stream_app.app import Messages, new_app, raw_topic, run_batches
    from stream_app.pipeline import Early, Outputs

    app = baseline_app(s, group) if kind == "faust" else new_app(s, group)
    app.conf.web_enabled = False
    src, dst = raw_topic(app, s, topic_in), raw_topic(app, s, topic_out)

    if kind == "faust":
        @app.agent(src, name="relay")
        async def forward(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await dst.send(key=event.key, value=event.value)
        return app

    async def process(records: Any, early: Early | None) -> Outputs:
        return Outputs(recommendations=[(r.key, r.value) for r in records])

    def messages(out: Outputs) -> Messages:
        return [(dst, key, value) for key, value in out.recommendations]

    @app.agent(src, name="relay")
    async def relay(stream: faust.StreamT) -> None:
        await run_batches(stream, s, _PassThrough(), topic_in, process, messages)
    return app


def child_main(argv: Sequence[str]) -> int:
    kind, topic_in, topic_out, group = argv
    s = Settings.from_env()
    if kind == "raw":
        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await raw_relay(s, topic_in, topic_out, group, stop)
        asyncio.run(main())
        return 0
    from faust.worker import Worker

    worker = Worker(faust_relay_app(s, kind, topic_in, topic_out, group),
                    loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


# --- the command ---------------------------------------------------------------------------

def run_relay(settings: Settings, args: argparse.Namespace) -> int:
    """``stream-app bench --relay``: on an embedded broker unless one is configured."""
    from stream_app.embedded import LocalStack

    events = getattr(args, "relay_events", None) or 20000
    rate = getattr(args, "rate", None)  # "half" (or none): half each relay's own maximum
    with LocalStack(settings) as stack:
        results = asyncio.run(measure_relays(
            stack.settings, events=events, rate=None if rate in (None, "half") else float(rate),
            latency_s=4.0))
    report(results)
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def report(results: dict[str, Any]) -> None:
    print(f"\nstream-app bench --relay ({results['events']:,} records, "
          f"{results['partitions']} partitions, each relay in a process of its own)")
    for kind in KINDS:
        if kind not in results:
            continue
        r = results[kind]
        ratio = results.get("ratios", {}).get(kind)
        line = (f"  {LABELS[kind]:<30} {r['events_per_s']:>9,.0f} events/s"
                + (f" {ratio:>6.3f}x raw" if ratio is not None else " " * 12))
        lat = r["latency_ms"]
        if lat:
            line += (f"   at {r['latency_rate']:,.0f}/s: p50 {lat['p50']} / p95 {lat['p95']}"
                     f" / p99 {lat['p99']} ms")
        print(line)
    print("  settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()))


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
