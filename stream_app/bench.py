"""`stream-app bench`: throughput and latency of one worker on the embedded default.

Phases, each timed from the first record sent to the last recommendation read:
catalog item events (encoded by the model), activity events on known items
(no model call), free-text activity events (one model call per batch), and a
paced run for event -> recommendation latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from typing import Any

from stream_app.catalog_files import read_catalog
from stream_app.config import Settings
from stream_app.demo import bundled
from stream_app.embedded import delete_prefix
from stream_app.kafka_io import Producer, consume
from stream_app.loading import load_catalog
from stream_app.processes import local_system

STALL_S = 60.0  # a flood fails when no recommendation arrived for this long
# the reader's fetch wait: tansu holds a fetch this long, which would add to every latency
# measured (the relay bench's reader uses the same)
READER_FETCH_WAIT_MS = 5

_WORDS = ("space robots love ghosts cowboys detectives dragons heists aliens music war family "
          "comedy history ocean mountains zombies spies time travel romance murder").split()


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "relay", False):
        from stream_app.bench_relay import run_relay

        return run_relay(settings, args)
    if getattr(args, "items", None):
        return _run_scale(settings, args)
    run = uuid.uuid4().hex[:6]
    topics = dict(topic_items=f"bench-items-{run}", topic_activity=f"bench-activity-{run}",
                  topic_recommendations=f"bench-recs-{run}",
                  topic_feedback=f"bench-feedback-{run}", topic_dead_letters=f"bench-dlq-{run}")
    s = settings.replace(app_id=f"{settings.app_id}-bench-{run}", **topics)
    with local_system(s, key_prefix=f"{s.key_prefix}-bench-{run}") as (_, s, _):
        try:
            figures = asyncio.run(_measure(s, args))
        finally:
            delete_prefix(s.redis(), s.key_prefix)
    _report(figures, args.json)
    return 0


def _run_scale(settings: Settings, args: argparse.Namespace) -> int:
    """``--items N[,N...]``: each size on a fresh worker, key prefix and topics, in one run
    (ratios from one run on a shared machine); the relays once, on the first broker."""
    from stream_app.bench_scale import measure_scale, relay_figures

    sizes = [int(float(n)) for n in str(args.items).split(",") if n.strip()]
    results: dict[str, Any] = {"sizes": {}}
    for n in sizes:
        run = uuid.uuid4().hex[:6]
        topics = dict(topic_items=f"bench-items-{run}",
                      topic_activity=f"bench-activity-{run}",
                      topic_recommendations=f"bench-recs-{run}",
                      topic_feedback=f"bench-feedback-{run}",
                      topic_dead_letters=f"bench-dlq-{run}")
        s = settings.replace(app_id=f"{settings.app_id}-bench-{run}", **topics)
        with local_system(s, key_prefix=f"{s.key_prefix}-bench-{run}") as (_, s, _):
            try:
                results["sizes"][n] = asyncio.run(measure_scale(s, args, n))
                if args.relay_events and "relays" not in results:
                    # HOOK: stream_app.bench_relay.measure_relays (raw aiokafka relay, bare
                    # Faust pass-through) on the same broker; skipped when it is missing
                    relays = asyncio.run(relay_figures(s, args.relay_events))
                    if relays is not None:
                        results["relays"] = relays
            finally:
                delete_prefix(s.redis(), s.key_prefix)
        _report_scale(results)
    first = results["sizes"][sizes[0]]["item_activity_events_per_s"]
    results["throughput_vs_first_size"] = {
        n: round(f["item_activity_events_per_s"] / first, 3) for n, f in results["sizes"].items()}
    relays = results.get("relays")
    if relays:
        results["worker_vs_relays"] = {
            n: {kind: round(f["item_activity_events_per_s"] / relays[kind]["events_per_s"], 3)
                for kind in ("raw", "faust", "tuned") if kind in relays}
            for n, f in results["sizes"].items()}
    _report_scale(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


def _report_scale(results: dict[str, Any]) -> None:
    print("\nstream-app bench --items (one worker, synthetic catalog of vectors)")
    for n, figures in results["sizes"].items():
        print(f"  {n} items")
        for key, value in figures.items():
            print(f"    {key:<34} {value}")
    for key in ("throughput_vs_first_size", "worker_vs_relays"):
        if key in results:
            print(f"  {key}: {results[key]}")
    if "relays" in results:
        print("  relays: " + json.dumps({k: v.get("events_per_s") for k, v in
                                         results["relays"].items() if isinstance(v, dict)}))


async def _measure(s: Settings, args: argparse.Namespace) -> dict[str, Any]:
    items = read_catalog(args.catalog) if args.catalog else read_catalog(
        bundled("sample_catalog.jsonl"))
    item_ids = [str(i["item_id"]) for i in items]
    rng = random.Random(1)
    figures: dict[str, Any] = {"batch_size": s.batch_size, "catalog_items": len(items)}

    t0 = time.perf_counter()
    done = await load_catalog(s, s.kafka(), items, progress=True)
    figures["catalog_item_events_per_s"] = round(done / (time.perf_counter() - t0), 1)

    received: dict[str, float] = {}
    versions: dict[str, str] = {}
    if args.trained:
        figures["model_version"] = await _promote_trained(s, random.Random(2))

    async def reader() -> None:
        async for _, value in consume(s.kafka(), s.topic_recommendations,
                                      fetch_max_wait_ms=READER_FETCH_WAIT_MS):
            if isinstance(value, dict):
                received.setdefault(value["event_id"], time.perf_counter())
                versions[value["event_id"]] = value.get("model_version", "")

    task = asyncio.create_task(reader())
    try:
        def item_event(n: int, tag: str) -> dict[str, Any]:
            return {"event_id": f"{tag}-{n}", "user_id": f"user-{rng.randrange(args.users)}",
                    "type": rng.choice(["view", "click", "like", "purchase"]),
                    "item_id": rng.choice(item_ids), "ts": 1.7e9 + n}

        def text_event(n: int) -> dict[str, Any]:
            words = " ".join(rng.choice(_WORDS) for _ in range(6))
            return {"event_id": f"text-{n}", "user_id": f"user-{rng.randrange(args.users)}",
                    "type": rng.choice(["search", "text"]), "text": f"{words} #{n}",
                    "ts": 1.7e9 + args.events + n}  # after the item events, in the past

        await _flood(s, [item_event(n, "warm") for n in range(200)], received, "warm-up")
        if args.trained:  # measured once the worker ranks with it
            await _until_version(s, item_event, received, versions, figures["model_version"])
        figures["item_activity_events_per_s"] = await _flood(
            s, [item_event(n, "item") for n in range(args.events)], received, "item events")
        figures["text_activity_events_per_s"] = await _flood(
            s, [text_event(n) for n in range(args.text_events)], received, "text events")
        figures["latency_ms_at_50_events_per_s"] = await _paced(
            s, [item_event(n, "paced") for n in range(300)], received, rate=50.0)
        if getattr(args, "rate", None):  # --rate R|half: the latency at a higher rate too
            rate = (figures["item_activity_events_per_s"] / 2 if args.rate == "half"
                    else float(args.rate))
            figures[f"latency_ms_at_{rate:.0f}_events_per_s"] = await _paced(
                s, [item_event(n, "rated") for n in range(max(300, int(rate * 5)))],
                received, rate=rate)
    finally:
        task.cancel()
    return figures


async def _promote_trained(s: Settings, rng: random.Random) -> str:
    """A sequence model trained briefly on random walks over the loaded catalog, saved and
    promoted: the bench then measures the per-event cost of a trained version (the
    sequence model's query and matrix product on top of the plain encoder's work)."""
    from stream_app.bench_footprint import bench_adapter
    from stream_app.encoder import encoder_version
    from stream_app.store import Store, connect
    from stream_app.versions import Registry

    base = encoder_version(s)  # the worker's encoder (its backend): what it serves
    client = connect(s.redis())
    try:
        ids, vectors = await Store(client, s.key_prefix).load_catalog(base)
        registry = Registry(client, s.key_prefix, base)
        adapter = bench_adapter(s, ids, vectors, base, await registry.next_version(), rng)
        await registry.save(adapter, {"created_at": time.time(), "reason": "bench"})
        await registry.promote(adapter.version, reason="bench --trained")
        return adapter.version
    finally:
        await client.aclose()


async def _until_version(s: Settings, make: Any, received: dict[str, float],
                         versions: dict[str, str], version: str) -> None:
    for attempt in range(60):
        event = make(attempt, "swap")
        await _flood(s, [event], received, "model swap")
        if versions.get(event["event_id"]) == version:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the worker never ranked with {version}")


async def _flood(s: Settings, events: list[dict[str, Any]], received: dict[str, float],
                 label: str) -> float:
    """Send everything at once; events/s until the last recommendation arrived."""
    from tqdm import tqdm

    start = time.perf_counter()
    async with Producer(s.kafka()) as producer:
        await producer.send_all(s.topic_activity, events, "user_id")
    ids = [e["event_id"] for e in events]
    with tqdm(total=len(ids), desc=label, unit="event") as bar:
        seen, progressed = 0, time.monotonic()
        while seen < len(ids):
            await asyncio.sleep(0.1)
            now_seen = sum(1 for i in ids if i in received)
            bar.update(now_seen - seen)
            if now_seen > seen:
                progressed = time.monotonic()
            elif time.monotonic() - progressed > STALL_S:
                raise RuntimeError(
                    f"{label}: {len(ids) - now_seen} of {len(ids)} events got no "
                    f"recommendation for {STALL_S:.0f} s (dead-lettered? see the "
                    f"{s.topic_dead_letters} topic)")
            seen = now_seen
    end = max(received[i] for i in ids)
    return round(len(ids) / (end - start), 1)


async def _paced(s: Settings, events: list[dict[str, Any]], received: dict[str, float],
                 rate: float) -> dict[str, float]:
    """Send ``events`` at ``rate`` per second, in ticks (each tick's due events, then a
    flush); an event counts from when the broker confirmed it (its tick's flush)."""
    sent: dict[str, float] = {}
    async with Producer(s.kafka()) as producer:
        start, i = time.perf_counter(), 0
        while i < len(events):
            due = max(i + 1, min(len(events), int((time.perf_counter() - start) * rate) + 1))
            for e in events[i:due]:
                await producer.send(s.topic_activity, e, key=e["user_id"])
            await producer.flush()
            now = time.perf_counter()
            for e in events[i:due]:
                sent[e["event_id"]] = now
            i = due
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    while not all(i in received for i in sent):
        await asyncio.sleep(0.05)
    lat = sorted((received[i] - t) * 1000 for i, t in sent.items())

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)
    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)}


def _report(figures: dict[str, Any], path: str | None) -> None:
    print("\nstream-app bench (one worker, embedded broker)")
    for key, value in figures.items():
        print(f"  {key:<32} {value}")
    if path:
        with open(path, "w") as fh:
            json.dump(figures, fh, indent=2)
