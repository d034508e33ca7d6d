"""`stream-app bench --relay`: what Kafka relaying costs through the raw client and Faust.

The same pre-produced flood of N records goes, on one broker, through

- ``raw``: an aiokafka relay (``getmany`` -> a send per record -> wait for every
  delivery -> commit), the client's ceiling;
- ``faust``: a bare Faust agent as Faust is commonly used, forwarding each record
  (``async for event in stream.events(): await topic.send(...)``) on an app with
  Faust's default settings (what ``new_app`` was before it was tuned);
- ``tuned``: a Faust pass-through that runs the worker's own batch loop
  (``app.run_batches`` over ``take_events``, outputs confirmed by ``app.send_confirmed``
  before the batch is acknowledged) on ``app.new_app``'s settings;

each in its own process. Throughput comes from the broker's timestamps of the relayed
records (first to last, so start-up and group joins are left out); then records are
sent at a fixed rate (by default half the relay's own maximum) and a reader measures
end-to-end latency: from handing the record to a producer to reading its copy.

Other benchmarks call :func:`measure_relays` with a running broker's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from stream_app.config import Settings
from stream_app.kafka_io import Kafka, ensure_topics

KINDS = ("raw", "faust", "tuned")
LABELS = {"raw": "raw aiokafka relay", "faust": "bare Faust agent (per record)",
          "tuned": "tuned Faust agent (batches)"}
_MAX_PACED_RATE = 5000.0  # the paced sender and reader share the machine with the relay


@dataclass
class RelayFigures:
    kind: str
    events: int
    events_per_s: float
    latency_rate: float = 0.0  # events/s of the paced run
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    seconds: float = 0.0  # first to last relayed record of the flood


# --- the flood and the measurements (parent side) ------------------------------------------

def flood_value(n: int, rng: random.Random, sent: float | None = None) -> bytes:
    """An activity event of the usual size (about 150 bytes)."""
    event: dict[str, Any] = {"event_id": f"relay-{n}", "user_id": f"user-{rng.randrange(500)}",
                             "type": rng.choice(("view", "click", "like", "purchase")),
                             "item_id": str(rng.randrange(10000)), "ts": 1.7e9 + n}
    if sent is not None:
        event["sent"] = sent
    return json.dumps(event).encode()


async def produce_flood(kafka: Kafka, topic: str, events: int, seed: int = 1) -> None:
    """``events`` records keyed by user into ``topic``, all confirmed before returning."""
    from aiokafka import AIOKafkaProducer

    from stream_app.connections import kafka_config

    rng = random.Random(seed)
    producer = AIOKafkaProducer(**kafka_config(kafka).client_args(), linger_ms=5,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    try:
        for n in range(events):
            value = flood_value(n, rng)
            await producer.send(topic, value, key=f"user-{n % 500}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def collect_timestamps(kafka: Kafka, topic: str, count: int,
                             child: subprocess.Popen | None = None,
                             timeout: float = 600.0) -> list[float]:
    """Broker timestamps (the relay's send times, seconds) of the first ``count`` records
    of ``topic``, read as they arrive (a broker's end offsets are not a record count on
    every Kafka-compatible broker: tansu's are not)."""
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
                raise RuntimeError(f"relay process exited with code {child.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(out)} of {count} records after {timeout}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batch.values():
                out.extend(r.timestamp / 1000.0 for r in records)
    finally:
        await consumer.stop()
    return out[:count]


async def _paced_latency(kafka: Kafka, topic_in: str, topic_out: str, rate: float,
                         seconds: float, seed: int = 2) -> dict[str, float]:
    """Send at ``rate`` for ``seconds`` (in 5 ms ticks), read the relayed copies, and
    return latency percentiles in ms (from handing a record to the producer to reading
    it back)."""
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
        parts = reader.partitions_for_topic(topic_out) or set()
        tps = [TopicPartition(topic_out, p) for p in parts]
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        for tp in tps:
            await reader.position(tp)  # resolved before the first paced record is sent

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


def percentiles(values: Sequence[float]) -> dict[str, float]:
    lat = sorted(values)
    if not lat:
        return {}

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)
    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(lat[-1], 1)}


def flood_rate(stamps: Sequence[float]) -> tuple[float, float]:
    """(events/s, seconds) from the relayed records' timestamps, first to last."""
    span = max(stamps) - min(stamps)
    return (round((len(stamps) - 1) / span, 1) if span > 0 else float("inf")), round(span, 3)


async def measure_one(s: Settings, kind: str, topic_in: str, events: int, run: str,
                      rate: float | None = None, latency_s: float = 4.0,
                      timeout: float = 600.0, profile: str | None = None) -> RelayFigures:
    """One relay process of ``kind`` over the flood already in ``topic_in``: its
    throughput, then its latency at ``rate`` (None: half its own maximum, at most
    5000/s)."""
    topic_out = f"relay-out-{kind}-{run}"
    await ensure_topics(s.kafka(), [topic_out], s.topic_partitions, s.topic_replication)
    child = start_child(s, kind, topic_in, topic_out, f"relay-{kind}-{run}", profile=profile)
    try:
        stamps = await collect_timestamps(s.kafka(), topic_out, events, child, timeout)
        per_s, seconds = flood_rate(stamps)
        figures = RelayFigures(kind, events, per_s, seconds=seconds)
        if latency_s > 0:
            figures.latency_rate = round(rate or min(_MAX_PACED_RATE, per_s / 2), 1)
            figures.latency_ms = await _paced_latency(s.kafka(), topic_in, topic_out,
                                                      figures.latency_rate, latency_s)
        return figures
    finally:
        stop_child(child)


async def measure_relays(s: Settings, events: int = 20000, kinds: Sequence[str] = KINDS,
                         rate: float | None = None, latency_s: float = 4.0,
                         profile_dir: str | None = None) -> dict[str, Any]:
    """The flood produced once, then each relay in turn on it; figures and ratios to the
    raw relay. ``s`` must name a running broker (``kafka_bootstrap_servers``)."""
    run = uuid.uuid4().hex[:6]
    topic_in = f"relay-in-{run}"
    await ensure_topics(s.kafka(), [topic_in], s.topic_partitions, s.topic_replication)
    await produce_flood(s.kafka(), topic_in, events)
    results: dict[str, Any] = {"events": events, "partitions": s.topic_partitions}
    for kind in kinds:
        profile = os.path.join(profile_dir, f"{kind}.prof") if profile_dir else None
        results[kind] = asdict(await measure_one(s, kind, topic_in, events, run, rate,
                                                 latency_s, profile=profile))
    if "raw" in results:
        raw = results["raw"]["events_per_s"]
        results["ratios"] = {k: round(results[k]["events_per_s"] / raw, 3)
                             for k in kinds if k != "raw" and k in results}
    return results


# --- the relay processes (child side) ------------------------------------------------------

def start_child(s: Settings, kind: str, topic_in: str, topic_out: str, group: str,
                profile: str | None = None) -> subprocess.Popen:
    if kind not in KINDS:
        raise ValueError(f"unknown relay {kind!r}; one of {', '.join(KINDS)}")
    env = {**os.environ, **s.env(), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    cmd += ["-m", "stream_app.bench_relay"]
    return subprocess.Popen(cmd + [kind, topic_in, topic_out, group], env=env,
                            stdout=subprocess.DEVNULL if not os.environ.get(
                                "STREAM_APP_RELAY_DEBUG") else None,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_child(child: subprocess.Popen, timeout: float = 30.0) -> None:
    import signal

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


def faust_relay_app(s: Settings, kind: str, topic_in: str, topic_out: str, group: str) -> Any:
    """The Faust app of the ``faust`` or ``tuned`` relay (not started)."""
    import faust

    from stream_app.app import new_app, raw_topic, run_batches, send_confirmed
    from stream_app.health import Health
    from stream_app.kafka_transport import App
    from stream_app.pipeline import Outputs

    if kind == "faust":
        app = baseline_app(s, group)
    else:
        app = new_app(s, group)
    app.conf.web_enabled = False
    for key, value in json.loads(os.environ.get("RELAY_EXPERIMENT_CONF", "{}")).items():
        setattr(app.conf, key, value)  # EXPERIMENT
    src, dst = raw_topic(app, s, topic_in), raw_topic(app, s, topic_out)

    if kind == "faust":
        @app.agent(src, name="relay")
        async def forward(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await dst.send(key=event.key, value=event.value)
        return app

    class PassThrough:
        health = Health(60.0, 600.0)
        stopping = False

        async def ready(self) -> None:
            return None

        def on_retry(self, topic: str, cause: str, error: str) -> None:
            pass

        def on_progress(self, topic: str, records: Any) -> None:
            pass

        async def publish(self, *args: Any) -> None:
            pass

    async def process(records: Any) -> Outputs:
        return Outputs(recommendations=[(r.key, r.value) for r in records])

    async def emit(out: Outputs) -> None:
        await send_confirmed([(dst, key, value) for key, value in out.recommendations])

    @app.agent(src, name="relay")
    async def relay(stream: faust.StreamT) -> None:
        await run_batches(stream, s, PassThrough(), topic_in, process, emit)

    assert isinstance(app, App)
    return app


def baseline_app(s: Settings, app_id: str) -> Any:
    """A Faust app as the worker's was before tuning: Faust's defaults, raw bytes,
    ``acks=all`` and the configurable fetch wait (else tansu holds each fetch 1.5 s)."""
    import tempfile

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


def child_main(argv: Sequence[str]) -> int:
    kind, topic_in, topic_out, group = argv
    if os.environ.get("RELAY_EXPERIMENT_SWITCH"):  # EXPERIMENT
        sys.setswitchinterval(float(os.environ["RELAY_EXPERIMENT_SWITCH"]))
    if os.environ.get("RELAY_EXPERIMENT_COUNT"):  # EXPERIMENT
        import atexit, collections, threading
        from asyncio import selector_events
        from aiokafka import conn
        counts = collections.Counter()
        orig = conn.AIOKafkaConnection.send
        def send(self, request, expect_response=True):
            counts[type(request).__name__] += 1
            return orig(self, request, expect_response)
        conn.AIOKafkaConnection.send = send
        origw = selector_events._SelectorSocketTransport.write
        def write(self, data):
            t0 = time.perf_counter()
            origw(self, data)
            counts["write_s"] += time.perf_counter() - t0
            counts["write_bytes"] += len(data)
            counts["writes"] += 1
        selector_events._SelectorSocketTransport.write = write
        def dump(*a):
            print("COUNTS", dict(counts), file=sys.stderr, flush=True)
        def loop():
            while True:
                time.sleep(2)
                dump()
        threading.Thread(target=loop, daemon=True).start()
    s = Settings.from_env()
    if kind == "raw":
        import signal

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            await raw_relay(s, topic_in, topic_out, group, stop)
        asyncio.run(main())
        return 0
    from faust.worker import Worker

    app = faust_relay_app(s, kind, topic_in, topic_out, group)
    worker = Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


# --- the command ---------------------------------------------------------------------------

def run_relay(settings: Settings, args: argparse.Namespace) -> int:
    """``stream-app bench --relay``: an embedded broker unless one is configured."""
    from stream_app.embedded import LocalStack

    kinds = [k.strip() for k in (getattr(args, "relays", None) or ",".join(KINDS)).split(",")]
    with LocalStack(settings) as stack:
        results = asyncio.run(measure_relays(
            stack.settings, events=args.events, kinds=kinds,
            rate=getattr(args, "rate", None), latency_s=getattr(args, "latency_s", 4.0),
            profile_dir=getattr(args, "profile_dir", None)))
    report(results)
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def report(results: dict[str, Any]) -> None:
    print(f"\nstream-app bench --relay ({results['events']} events, "
          f"{results['partitions']} partitions, one process each)")
    for kind in KINDS:
        if kind not in results:
            continue
        r = results[kind]
        lat = r["latency_ms"]
        ratio = results.get("ratios", {}).get(kind)
        print(f"  {LABELS[kind]:<32} {r['events_per_s']:>10,.0f} events/s"
              + (f"  ({ratio:.3f}x raw)" if ratio is not None else "")
              + (f"  latency at {r['latency_rate']:,.0f}/s: p50 {lat['p50']} ms, "
                 f"p95 {lat['p95']} ms, p99 {lat['p99']} ms" if lat else ""))


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
