"""`stream-app bench --batch-sizes 1,8,32,256`: what one micro-batch of activity costs a
worker, by batch size, without Kafka.

A Processor (the workers' own code: parse, fold with compare-and-set, rank, history,
counts) on a Redis server of this run's own, the bundled catalog (or ``--catalog``)
embedded by hashes of the item text (384 dimensions, the default model's; item events
call no model, so none is loaded), ``--users`` users choosing catalog items at random.
For each size (``--events`` events, at least 20 batches): wall time per batch and per
event, the time from a batch's start until its recommendations are handed to the
producer (a worker sends them before it counts popularity, co-visits and history), the
worker's CPU per event (this process, every thread: numpy's BLAS threads
included, ``blas_threads``), and, from the server's counters, Redis commands per event
(those the scripts run inside counted too) and Redis CPU per event. What is left of the
wall time is the worker's own Python (model code and the Redis client). ``--trained``
ranks with a briefly trained sequence model (its per-event cost). ``--profile FILE``
writes cProfile statistics of the timed batches (all sizes) for ``python -m pstats FILE``.

Where per-batch costs dominate (small batches: the latency of a quiet stream) and where
per-event costs do (a flood) shows in the two columns; docs/scaling.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

from stream_app.bench_footprint import (PARTITIONS, bench_adapter, processor_with_catalog,
                                        server_counters)
from stream_app.catalog_files import read_catalog
from stream_app.config import Settings
from stream_app.demo import bundled
from stream_app.embedded import RedisServer
from stream_app.evaluation.offline import to_records
from stream_app.store import connect

WARM_BATCHES = 20  # each size starts from users who already have state
MIN_BATCHES = 20  # timed per size, and at least ``--events`` events
TYPES = ("view", "click", "like", "purchase")


def run_batch_bench(settings: Settings, args: argparse.Namespace) -> int:
    sizes = [int(n) for n in str(args.batch_sizes).split(",") if n.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--batch-sizes: positive numbers, comma separated, not "
                         f"{args.batch_sizes!r}")
    items = read_catalog(args.catalog) if args.catalog else read_catalog(
        bundled("sample_catalog.jsonl"))
    figures = asyncio.run(measure(settings, sizes, items, args.users, args.events,
                                  getattr(args, "profile", None),
                                  getattr(args, "trained", False)))
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


async def measure(settings: Settings, sizes: Sequence[int], items: Sequence[dict[str, Any]],
                  users: int, events: int, profile: str | None = None,
                  trained: bool = False) -> dict[str, Any]:
    """Per-batch and per-event cost of each batch size, on a Redis server of its own."""
    server = RedisServer().start()
    try:
        s = settings.replace(redis_url=server.url, key_prefix="bb", redis_username="",
                             redis_password="", topic_partitions=PARTITIONS)
        client = connect(server.url)
        try:
            return await _measure(s, client, sizes, items, users, events, profile,
                                  trained)
        finally:
            await client.aclose()
    finally:
        server.stop()


async def _measure(s: Settings, client: Any, sizes: Sequence[int],
                   items: Sequence[dict[str, Any]], users: int, min_events: int,
                   profile: str | None, trained: bool = False) -> dict[str, Any]:
    processor = await processor_with_catalog(s, client, items)
    ids = [str(i["item_id"]) for i in items]
    rng = random.Random(1)
    catalog = processor.catalog
    if trained:
        index = catalog.index
        await catalog.use(bench_adapter(s, list(index.ids), index.rows_f32(range(len(index))),
                                        catalog.base_version, "bench-trained",
                                        random.Random(2)))
    offsets: dict[int, int] = {}
    clock = [1.7e9]

    def batch(n: int) -> list[Any]:
        events = []
        for _ in range(n):
            clock[0] += 1.0
            events.append({"event_id": f"e{int(clock[0])}",
                           "user_id": f"user-{rng.randrange(users)}",
                           "type": rng.choice(TYPES), "item_id": rng.choice(ids),
                           "ts": clock[0]})
        return to_records(s.topic_activity, events, "user_id", PARTITIONS, offsets)

    profiler = cProfile.Profile() if profile else None
    rows: dict[str, Any] = {}
    for size in sizes:
        for _ in range(WARM_BATCHES):
            await processor.process_activity(batch(size))
        batches = max(MIN_BATCHES, -(-min_events // size))
        work = [batch(size) for _ in range(batches)]  # made before the clock starts
        before = await server_counters(client)
        if profiler:
            profiler.enable()
        handed = [0.0]  # time from each batch's start until its recommendations left

        async def early(_: Any) -> None:
            handed[0] += time.perf_counter() - began

        started, cpu = time.perf_counter(), time.process_time()
        for records in work:
            began = time.perf_counter()
            await processor.process_activity(records, early)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            profiler.disable()
        after = await server_counters(client)
        events = batches * size
        commands = sum(k - before["calls"].get(c, 0) for c, k in after["calls"].items()
                       if c != "info")
        rows[str(size)] = {
            "batches": batches,
            "ms_per_batch": round(seconds / batches * 1000, 2),
            "ms_per_event": round(seconds / events * 1000, 3),
            "ms_to_recommendations": round(handed[0] / batches * 1000, 2),
            "events_per_s": round(events / seconds, 1),
            "cpu_ms_per_event": round(cpu / events * 1000, 3),
            "redis_commands_per_event": round(commands / events, 2),
            "redis_cpu_us_per_event": round((after["usec"] - before["usec"]) / events, 1),
        }
    if profiler and profile:
        profiler.dump_stats(profile)
    return {"items": len(items), "users": users, "dim": processor.encoder.dim,
            "model": catalog.adapter.version, "blas_threads": s.blas_threads,
            "shared_key_shards": s.shared_key_shards, "user_history": s.user_history,
            "sizes": rows}


def report(f: dict[str, Any]) -> str:
    lines = [f"stream-app bench --batch-sizes (in process, Redis of its own): {f['items']} "
             f"items, {f['users']} users, {f['dim']}-dim vectors, model {f['model']}, "
             f"BLAS threads {f['blas_threads'] or 'library default'}",
             "(Redis commands: those the Lua scripts run inside counted too)",
             "(ms to lists: from a batch's start until its recommendations are sent)", "",
             f"{'batch':>6} {'ms/batch':>9} {'ms to lists':>12} {'ms/event':>9} "
             f"{'events/s':>9} {'CPU ms/event':>13} {'Redis commands/event':>21} "
             f"{'Redis CPU us/event':>19}"]
    for size, row in f["sizes"].items():
        lines.append(f"{size:>6} {row['ms_per_batch']:>9} {row['ms_to_recommendations']:>12} "
                     f"{row['ms_per_event']:>9} "
                     f"{row['events_per_s']:>9} {row['cpu_ms_per_event']:>13} "
                     f"{row['redis_commands_per_event']:>21} "
                     f"{row['redis_cpu_us_per_event']:>19}")
    return "\n".join(lines)
