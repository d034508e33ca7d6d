"""`stream-app bench --items N[,N...]`: one worker on a synthetic catalog of vectors.

For each size: the catalog is sent as item events that carry their own ``vector`` (no
text is encoded), then (a catalog of at least ``ann_min_items`` items) the bench waits
for the worker's nearest-neighbour graph, floods activity events (users who keep to two
topics each), paces events at 50/s for latency, and measures the worker's RSS, Redis
bytes per user (``MEMORY USAGE`` of a sample of users' keys) and recall@10 of served
lists: at quiescence one probe event per sampled user, and the same users' states read
back from Redis ranked exactly (every item, float32, the popularity and co-visits as
they stood) in this process.

If ``stream_app.bench_relay`` provides ``measure_relays``, a raw aiokafka relay and a
bare Faust pass-through are measured on the same broker in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from stream_app.config import Settings
from stream_app.kafka_io import consume
from stream_app.loading import load_catalog
from stream_app.redis_keys import Keys


def synthetic_catalog(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, topic of each item): unit vectors in topics (``n // 2000``) and
    sub-topics (``n // 50``) around them, the way text embeddings cluster; float32, each
    row rounded to 6 decimals and scaled to unit length as a worker stores it."""
    rng = np.random.default_rng(seed)
    topics = max(1, n // 2000)
    subs = max(1, n // 50)
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sub_topic = rng.integers(topics, size=subs)
    sub = centres[sub_topic] + 0.8 * rng.standard_normal((subs, dim)).astype(np.float32) \
        / np.sqrt(dim)
    sub /= np.linalg.norm(sub, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    of = rng.integers(subs, size=n)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        v = sub[of[a:b]] + 0.7 * rng.standard_normal((b - a, dim)).astype(np.float32) \
            / np.sqrt(dim)
        v = np.round(v / np.linalg.norm(v, axis=1, keepdims=True), 6)
        out[a:b] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, of


def _items(vectors: np.ndarray) -> Iterator[dict[str, Any]]:
    for n in range(len(vectors)):
        yield {"item_id": f"v{n}", "vector": [round(float(x), 6) for x in vectors[n]]}


def model_dim(s: Settings) -> int:
    """The model's width: the synthetic vectors' (no model is loaded)."""
    from transformers import AutoConfig

    from stream_app.encoder import default_model_path

    path = Path(s.model_path) if s.model_path else default_model_path()
    return int(AutoConfig.from_pretrained(path).hidden_size)


def worker_pid(web_port: int) -> int | None:
    """The local worker serving on ``web_port`` (its WEB_PORT in /proc/<pid>/environ)."""
    want = f"WEB_PORT={web_port}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
            if b"worker" not in cmd or not any(b"stream_app" in c for c in cmd):
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if want in fh.read().split(b"\0"):
                    return int(pid)
        except OSError:
            continue
    return None


def rss_mb(pid: int | None) -> dict[str, float]:
    if pid is None:
        return {}
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}[key]] = round(
                    int(value.split()[0]) / 1024, 1)
    return out


async def _ann_ready(s: Settings, n: int, timeout: float) -> dict[str, Any] | None:
    """The worker's graph status once its text graph covers the catalog (None: small)."""
    if n < s.ann_min_items:
        return None
    from stream_app.store import connect

    client = connect(s.redis())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async for key in client.scan_iter(match=f"{s.key_prefix}:ann:*", count=100):
                raw = await client.get(key)
                status = json.loads(raw) if raw else {}
                text = status.get("text") or {}
                if text.get("graph_items", 0) >= 0.95 * n and not text.get("building"):
                    return status
            await asyncio.sleep(1.0)
    finally:
        await client.aclose()
    raise RuntimeError(f"the worker's graph did not cover {n} items within {timeout:.0f} s")


async def measure_scale(s: Settings, args: argparse.Namespace, n: int) -> dict[str, Any]:
    from stream_app.bench import READER_FETCH_WAIT_MS, _flood, _paced

    rng = random.Random(1)
    dim = model_dim(s)
    t0 = time.perf_counter()
    vectors, topic = synthetic_catalog(n, dim)
    figures: dict[str, Any] = {"items": n, "dim": dim, "batch_size": s.batch_size,
                               "ann": n >= s.ann_min_items,
                               "synthetic_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    done = await load_catalog(s, s.kafka(), _items(vectors), progress=True,
                              timeout=args.load_timeout)
    figures["catalog_item_events_per_s"] = round(done / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    status = await _ann_ready(s, n, args.load_timeout)
    if status is not None:
        figures["graph_ready_after_load_s"] = round(time.perf_counter() - t0, 1)
        figures["graph"] = status.get("text")
    by_topic: dict[int, list[int]] = {}
    for item, t in enumerate(topic):
        by_topic.setdefault(int(t), []).append(item)
    topics = list(by_topic)
    tastes = {u: [rng.choice(topics) for _ in range(2)] for u in range(args.users)}

    def event(k: int, tag: str, user: int | None = None, ts: float | None = None
              ) -> dict[str, Any]:
        u = rng.randrange(args.users) if user is None else user
        item = rng.choice(by_topic[rng.choice(tastes[u])])
        return {"event_id": f"{tag}-{k}", "user_id": f"user-{u}",
                "type": rng.choice(["view", "click", "like", "purchase"]),
                "item_id": f"v{item}", "ts": 1.7e9 + k if ts is None else ts}

    received: dict[str, float] = {}
    served: dict[str, list[str]] = {}

    async def reader() -> None:
        async for _, value in consume(s.kafka(), s.topic_recommendations,
                                      fetch_max_wait_ms=READER_FETCH_WAIT_MS):
            if isinstance(value, dict):
                received.setdefault(value["event_id"], time.perf_counter())
                served[value["event_id"]] = [i["item_id"] for i in value["items"]]

    task = asyncio.create_task(reader())
    try:
        await _flood(s, [event(k, "warm") for k in range(500)], received, "warm-up")
        figures["item_activity_events_per_s"] = await _flood(
            s, [event(k, "item") for k in range(args.events)], received, "item events")
        figures["latency_ms_at_50_events_per_s"] = await _paced(
            s, [event(k, "paced") for k in range(300)], received, rate=50.0)
        pid = worker_pid(s.web_port)
        figures.update(rss_mb(pid))
        figures["redis_bytes_per_user"] = await _bytes_per_user(s, args.users, rng)
        figures.update(await _recall(s, vectors, args, event, received, served))
    finally:
        task.cancel()
    return figures


async def _bytes_per_user(s: Settings, users: int, rng: random.Random, sample: int = 100
                          ) -> float:
    from stream_app.store import connect

    client = connect(s.redis())
    try:
        picked = rng.sample(range(users), min(sample, users))
        total = 0
        keys = Keys(s.key_prefix)
        for u in picked:
            for key in (keys.state(f"user-{u}"), keys.seen(f"user-{u}"),
                        keys.history(f"user-{u}")):
                total += await client.memory_usage(key) or 0
        return round(total / max(1, len(picked)), 1)
    finally:
        await client.aclose()


async def _recall(s: Settings, vectors: np.ndarray, args: argparse.Namespace, event: Any,
                  received: dict[str, float], served: dict[str, list[str]]) -> dict[str, Any]:
    """Probe events for a sample of users at quiescence, their served lists against an
    exact ranking of the same states (every item, float32) here."""
    from stream_app.bench import _flood
    from stream_app.catalog import Catalog
    from stream_app.metrics import Metrics
    from stream_app.pipeline import Processor
    from stream_app.store import Store, connect

    await asyncio.sleep(3 * s.popularity_refresh_s + 1.0)  # counts settled everywhere
    client = connect(s.redis())
    try:
        store = Store(client, s.key_prefix)
        catalog = Catalog.for_settings(store, "bench", vectors.shape[1], s)
        catalog.ann = None  # exact: every item, float32
        catalog.index.upsert((f"v{n}", vectors[n]) for n in range(len(vectors)))
        catalog.popularity.replace(await store.popularity())
        await catalog.refresh_covisits()
        users = random.Random(3).sample(range(args.users), min(args.recall_users, args.users))
        ts = 1.75e9  # after every other event, before the broker's clock (future_ts)
        # a skip: counts neither popularity nor co-visits, so probes ranked in a later
        # batch see the same counts as this process read above
        probes = [{**event(k, "probe", user=u, ts=ts), "type": "skip"}
                  for k, u in enumerate(users)]
        await _flood(s, probes, received, "recall probes")
        records = await store.read_users([f"user-{u}" for u in users])

        class _Dim:
            dim = vectors.shape[1]
            version = "bench"

        proc = Processor(s, store, _Dim(), catalog, Metrics())  # type: ignore[arg-type]
        states = [records[f"user-{u}"] for u in users]
        exact = proc._ranked([r.state for r in states],
                             [r.seen if s.exclude_seen else frozenset() for r in states],
                             [ts] * len(states), ts, s.top_k)
        hits = [len(set(served[p["event_id"]]) & {i for i, _, _ in want}) / max(1, len(want))
                for p, want in zip(probes, exact) if want]
        same = sum(served[p["event_id"]] == [i for i, _, _ in want]
                   for p, want in zip(probes, exact))
        return {"recall_at_10": round(float(np.mean(hits)), 4) if hits else None,
                "recall_users": len(hits), "identical_lists": same}
    finally:
        await client.aclose()


async def relay_figures(s: Settings, events: int) -> dict[str, Any] | None:
    """A raw aiokafka relay and a bare Faust pass-through on this broker, when
    ``stream_app.bench_relay`` has them (None otherwise: the hook stays unused)."""
    try:
        from stream_app.bench_relay import measure_relays
    except ImportError:
        return None
    return await measure_relays(s, events=events, latency_s=0.0)
