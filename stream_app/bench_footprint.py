"""`stream-app bench --footprint`: Redis bytes per user, and what refreshing popularity costs.

Users' events go through a Processor (the workers' own code, in-process: parse, fold
with compare-and-set, rank, history, counts) into a Redis server of this run's own, so
MEMORY USAGE and the server's counters see nothing else. The events are MovieLens
ratings when ``--catalog`` names a MovieLens directory (its first ``--users`` users),
else a synthetic stream shaped like production traffic: 10,000 items chosen by a Zipf
law, history lengths log-normal around MovieLens' (median ~70), millisecond timestamps
and UUID event ids. Vectors are 384-dimensional (the default model's size) hashes of the
item text: the bytes do not depend on the model, and no model is loaded.

The users are written in this release's format (``store.STATE_FORMAT``), then each
user's state, seen set and history are written again in format 1 (earlier releases)
beside them: the same content, so the two byte counts compare only the encodings.
Precision: each user's events folded again in memory in float32 (as ``model.interest``
does, no Redis) against what Redis holds: the cosine of every interest and whether the
top 10 are the same.

Popularity: one worker at ``EVENTS_PER_S`` events/s in micro-batches, for catalogs of
10^4..10^6 counted items, refreshing once a second by the earlier full read (HGETALL)
and by following the log; Redis commands, bytes Redis sent and Redis CPU per second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import ActivityEvent
from stream_app.embedded import RedisServer
from stream_app.metrics import Metrics
from stream_app.model.interest import UserState, apply_event, event_weight
from stream_app.model.popularity import Popularity
from stream_app.pipeline import Processor
from stream_app.redis_keys import Keys
from stream_app.store import (_decode_history, _encode_history, _encode_state, Store,
                              UserRecord, connect)

DIM = 384  # the default model's (all-MiniLM-L6-v2)
SYNTHETIC_ITEMS = 10_000
EVENTS_PER_S = 1000
BATCHES_PER_S = 20  # 1,000 events/s as 20 micro-batches of 50
POPULARITY_ITEMS = (10_000, 100_000, 1_000_000)
PRECISION_USERS = 100
HALF_LIFE = 60 * 86400.0  # the default popularity half-life
PARTITIONS = 4


class HashEncoder:
    """384-dimensional unit vectors from a hash of the text (no model)."""

    dim = DIM
    version = "hash-384"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), np.float32)
        for n, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[n] = np.random.default_rng(seed).standard_normal(DIM)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def run_footprint(settings: Settings, args: argparse.Namespace) -> int:
    figures = asyncio.run(measure(settings, args.users, args.catalog))
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


async def measure(settings: Settings, users: int, dataset: str | None = None,
                  popularity_items: Sequence[int] = POPULARITY_ITEMS,
                  precision_users: int = PRECISION_USERS,
                  progress: bool = True) -> dict[str, Any]:
    """Every figure of the footprint bench, on a Redis server of its own."""
    server = RedisServer().start()
    try:
        s = settings.replace(redis_url=server.url, key_prefix="fp", redis_username="",
                             redis_password="", topic_partitions=PARTITIONS)
        client = connect(server.url)
        try:
            items, events, source = _data(users, dataset)
            figures: dict[str, Any] = {"data": source, "users": len({e["user_id"] for e in events}),
                                       "events": len(events), "items": len(items), "dim": DIM,
                                       "state_format": s.state_format,
                                       "batch_size": s.batch_size,
                                       "redis": (await client.info("server")).get(
                                           "redis_version", "")}
            started = time.perf_counter()
            figures["per_event"] = {}
            processor = await replay(s, client, items, events, progress, figures["per_event"])
            figures["replay_s"] = round(time.perf_counter() - started, 1)
            figures["per_user"] = await per_user(client, processor.store, events, s)
            figures["precision"] = precision(processor, await _read_all(processor.store, events),
                                             events, s, precision_users)
            figures["popularity"] = [await popularity_costs(client, n) for n in popularity_items]
            return figures
        finally:
            await client.aclose()
    finally:
        server.stop()


# --- data -----------------------------------------------------------------------
def _data(users: int, dataset: str | None) -> tuple[list[dict], list[dict], str]:
    if dataset and Path(dataset).is_dir():
        from stream_app.evaluation.datasets import load_movielens

        data = load_movielens(dataset, limit_users=users)
        return data.items, data.events, f"MovieLens {data.name}, first {users} users"
    items, events = synthetic(users)
    return items, events, (f"synthetic: {SYNTHETIC_ITEMS} items (Zipf), log-normal history "
                           f"lengths, ms timestamps, UUID event ids")


def synthetic(users: int, items: int = SYNTHETIC_ITEMS, seed: int = 1,
              median_events: float = 70.0) -> tuple[list[dict], list[dict]]:
    """Items and a time-ordered activity stream (see the module docstring)."""
    rng = random.Random(seed)
    catalog = [{"item_id": str(100_000 + n), "title": f"item {n}", "tags": [f"t{n % 20}"]}
               for n in range(items)]
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(items)]
    kinds = ["view"] * 5 + ["click"] * 3 + ["like", "purchase", "skip", "rate"]
    events = []
    start = 1_700_000_000.0
    for u in range(users):
        n = max(3, min(3000, int(rng.lognormvariate(math.log(median_events), 1.1))))
        ts = start + rng.uniform(0, 86400 * 30)
        chosen = rng.choices(range(items), weights, k=n)
        for row in chosen:
            ts += rng.expovariate(1 / 3600.0)
            kind = rng.choice(kinds)
            ev = {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                  "user_id": f"user-{u}", "type": kind, "item_id": catalog[row]["item_id"],
                  "ts": round(ts, 3)}
            if kind == "rate":
                ev["rating"] = rng.choice([1.0, 2.0, 3.0, 4.0, 4.5, 5.0])
            events.append(ev)
    events.sort(key=lambda e: e["ts"])
    return catalog, events


async def processor_with_catalog(s: Settings, client: Any, items: Sequence[dict]
                                 ) -> Processor:
    """A worker's Processor on ``client`` (hash vectors, no model) with ``items`` loaded
    through its item path, 512 at a time, over ``PARTITIONS`` partitions."""
    from stream_app.evaluation.offline import to_records

    store = Store.for_settings(client, s)
    encoder = HashEncoder()
    processor = Processor(s, store, encoder,
                          Catalog.for_settings(store, encoder.version, encoder.dim, s), Metrics())
    offsets: dict[int, int] = {}
    for start in range(0, len(items), 512):
        await processor.process_items(to_records(s.topic_items, items[start:start + 512],
                                                 "item_id", PARTITIONS, offsets))
    return processor


def bench_adapter(s: Settings, ids: Sequence[str], vectors: np.ndarray, base: str,
                  version: str, rng: random.Random) -> Any:
    """A sequence model trained briefly (two epochs) on 64 random walks over the catalog:
    not a good model, but one that costs what a trained version costs per event (its
    query and matrix product on top of the plain encoder's work)."""
    import dataclasses

    from stream_app.model.adapter import Adapter, Blend
    from stream_app.model.sequence import Window, fit_sequence

    windows = [Window(tuple(rng.randrange(len(ids)) for _ in range(s.recent_items + 1)))
               for _ in range(64)]
    params = dataclasses.replace(s.sequence_params(), epochs=2.0)
    weights, _ = fit_sequence(None, windows, list(ids), vectors, params)
    return Adapter(version, base, weights,
                   Blend(1.0, 1.0, s.popularity_weight, s.covisit_weight))


async def replay(s: Settings, client: Any, items: Sequence[dict], events: Sequence[dict],
                 progress: bool = True, per_event: dict[str, Any] | None = None) -> Processor:
    """The catalog, then the events in micro-batches of ``batch_size``, as a worker;
    ``per_event`` gets the commands and bytes per activity event (a server of our own)."""
    from stream_app.evaluation.offline import to_records

    processor = await processor_with_catalog(s, client, items)
    offsets: dict[int, int] = {}
    last = time.monotonic()
    before = await server_counters(client) if per_event is not None else None
    for start in range(0, len(events), s.batch_size):
        await processor.process_activity(to_records(
            s.topic_activity, events[start:start + s.batch_size], "user_id", PARTITIONS,
            offsets))
        if progress and time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  replayed {start + s.batch_size}/{len(events)} events", flush=True)
    if before is not None and per_event is not None and events:
        after = await server_counters(client)
        n = len(events)
        per_event["commands"] = {c: round((k - before["calls"].get(c, 0)) / n, 3)
                                 for c, k in sorted(after["calls"].items())
                                 if k != before["calls"].get(c, 0) and c != "info"}
        per_event["redis_received_bytes"] = round((after["in"] - before["in"]) / n)
        per_event["redis_sent_bytes"] = round((after["out"] - before["out"]) / n)
        per_event["redis_cpu_us"] = round((after["usec"] - before["usec"]) / n, 1)
    return processor


# --- bytes per user ---------------------------------------------------------------
async def per_user(client: Any, store: Store, events: Sequence[dict], s: Settings,
                   listpack: bool = True) -> dict[str, Any]:
    """Each user's keys as written (this release) and again in format 1, beside them
    (``listpack``: also the seen sets under another server setting; a server of our own)."""
    old = Store(client, s.key_prefix + "-format1", state_format=1)
    seen_ts = _seen_times(events, s.seen_max)
    rows: dict[str, list[dict[str, int]]] = {"now": [], "format 1": []}
    for user in sorted(seen_ts):
        keys = (store.keys.state(user), store.keys.seen(user), store.keys.history(user))
        vec, meta, ver = await client.hmget(keys[0], "vec", "meta", "ver")
        history = await client.lrange(keys[2], 0, -1)
        rows["now"].append(await _sizes(client, keys, vec, meta, history))
        state = (await store.read_users([user]))[user].state
        vec1, meta1 = _encode_state(state, 1)
        history1 = [_encode_history(_decode_history(e), 1) for e in history]
        keys1 = (old.keys.state(user), old.keys.seen(user), old.keys.history(user))
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys1[0], mapping={"vec": vec1, "meta": meta1, "ver": ver})
        pipe.zadd(keys1[1], {item: ts for item, ts in seen_ts[user].items()})
        if history1:
            pipe.rpush(keys1[2], *history1)
        await pipe.execute()
        rows["format 1"].append(await _sizes(client, keys1, vec1, meta1, history1))
    out: dict[str, Any] = {name: _summary(r) for name, r in rows.items()}
    if listpack:
        out["seen_listpack"] = await _seen_listpack(client, [store.keys.seen(u) for u in seen_ts],
                                                    [old.keys.seen(u) for u in seen_ts],
                                                    s.seen_max + s.batch_size)
    return out


def _seen_times(events: Sequence[dict], keep: int) -> dict[str, dict[str, float]]:
    """Each user's seen items with their latest event time, as format 1 scored them."""
    seen: dict[str, dict[str, float]] = {}
    for e in events:
        if e.get("item_id") is not None:
            mine = seen.setdefault(str(e["user_id"]), {})
            mine[str(e["item_id"])] = max(float(e["ts"]), mine.get(str(e["item_id"]), -math.inf))
    return {u: dict(sorted(m.items(), key=lambda p: p[1])[-keep:]) for u, m in seen.items()}


async def _sizes(client: Any, keys: Sequence[str], vec: bytes, meta: bytes,
                 history: Sequence[bytes]) -> dict[str, int]:
    state_b, seen_b, history_b = [int(await client.memory_usage(k, samples=0) or 0)
                                  for k in keys]
    seen = await client.zrange(keys[1], 0, -1)
    if meta[:1] == b"\x02":  # format 2: the compressed metadata, then float16 vectors
        meta_len = 5 + int.from_bytes(meta[1:5], "little")
        vectors, metadata = len(meta) - meta_len, meta_len
    else:
        vectors, metadata = len(vec), len(meta)
    payload = {"vectors": vectors, "metadata": metadata,
               "seen": sum(len(m) + 8 for m in seen),  # ids and 8-byte scores
               "history": sum(len(e) for e in history)}
    total = state_b + seen_b + history_b
    return {"total": total, "state": state_b, "seen_key": seen_b, "history_key": history_b,
            **payload, "seen_items": len(seen), "history_entries": len(history),
            "redis_overhead": total - sum(payload.values())}


def _summary(rows: list[dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in rows[0] if rows else ():
        values = [r[name] for r in rows]
        out[name] = {"mean": round(statistics.mean(values), 1),
                     "median": statistics.median(values), "max": max(values)}
    return out


async def _seen_listpack(client: Any, now: list[str], format1: list[str], entries: int
                         ) -> dict[str, Any]:
    """Seen sets copied under zset-max-listpack-entries >= ``entries`` (a server setting:
    seen_max and a batch's additions, which come before the trim)."""
    previous = (await client.config_get("zset-max-listpack-entries"))
    limit = int(next(iter(previous.values()), 128))
    await client.config_set("zset-max-listpack-entries", max(entries, limit))
    out: dict[str, Any] = {"zset-max-listpack-entries": max(entries, limit),
                           "default_limit": limit}
    try:
        for name, keys in (("now", now), ("format 1", format1)):
            sizes = []
            for key in keys:
                await client.zunionstore("fp:copy", [key])
                sizes.append(int(await client.memory_usage("fp:copy", samples=0) or 0))
                await client.delete("fp:copy")
            out[name] = {"mean": round(statistics.mean(sizes), 1) if sizes else 0,
                         "median": statistics.median(sizes) if sizes else 0}
    finally:
        await client.config_set("zset-max-listpack-entries", limit)
    return out


async def _read_all(store: Store, events: Sequence[dict]) -> dict[str, UserRecord]:
    return await store.read_users(sorted({str(e["user_id"]) for e in events}))


# --- precision ----------------------------------------------------------------------
def precision(processor: Processor, stored: dict[str, UserRecord], events: Sequence[dict],
              s: Settings, sample: int) -> dict[str, Any]:
    """What Redis holds (float16 between batches) against a float32 fold of the same
    events: each interest's cosine, and the same top 10 (ranked the same way)."""
    users = sorted(stored)[:sample]
    wanted = set(users)
    weights, params = s.event_weights(), s.interest_params()
    folds: dict[str, UserState] = {}
    index = processor.catalog.index
    for e in events:
        user = str(e["user_id"])
        if user not in wanted:
            continue
        ev = ActivityEvent(event_id=e["event_id"], user_id=user, type=e["type"],
                           ts=float(e["ts"]), partition=0, offset=0,
                           item_id=str(e["item_id"]), rating=e.get("rating"))
        vec = index.vector(ev.item_id)
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        folds[user] = apply_event(folds.get(user, UserState()), ev, vec,
                                  event_weight(ev, weights, s.rating_neutral), ev.item_id,
                                  params)
    cosines, same_top, overlaps, same_shape = [], 0, [], 0
    for user in users:
        got, want = stored[user].state, folds[user]
        if [i.source for i in got.interests] == [i.source for i in want.interests]:
            same_shape += 1
            for g, w in zip(got.interests, want.interests):
                cosines.append(float(g.vector @ w.vector) /
                               max(float(np.linalg.norm(g.vector) * np.linalg.norm(w.vector)),
                                   1e-30))
        top_got = [i for i, _, _ in processor.recommend(stored[user], 10)]
        top_want = [i for i, _, _ in processor.recommend(
            UserRecord(want, stored[user].version, stored[user].seen), 10)]
        same_top += top_got == top_want
        overlaps.append(len(set(top_got) & set(top_want)) / max(len(top_want), 1))
    return {"users": len(users), "same_interests": same_shape,
            "interest_cosine_min": round(min(cosines), 7) if cosines else None,
            "interest_cosine_mean": round(statistics.mean(cosines), 9) if cosines else None,
            "same_top10": same_top, "top10_overlap_mean": round(statistics.mean(overlaps), 4)
            if overlaps else None}


# --- popularity -------------------------------------------------------------------------
async def popularity_costs(client: Any, items: int, seconds: int = 5,
                           seed: int = 3) -> dict[str, Any]:
    """One worker counting ``EVENTS_PER_S`` events/s (``BATCHES_PER_S`` micro-batches)
    over a hash of ``items`` counted items, refreshing once a second: the earlier full
    read (HGETALL, counts not logged) against following the log. Per second of traffic;
    the commands include those scripts ran."""
    prefix = f"fp-pop-{items}"
    key = Keys(prefix).popularity()
    pipe = client.pipeline(transaction=False)
    for n in range(items):  # the hash as a long-running deployment has it
        pipe.hset(key, f"i{n}", f"{1.0 + n % 7:.17g},{1.7e9:.17g}")
        if n % 10_000 == 9_999:
            await pipe.execute()
    await pipe.execute()
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(items)]
    per_batch = EVENTS_PER_S // BATCHES_PER_S
    traffic = [[[(f"i{row}", 1.0, 1.7e9 + sec + b / BATCHES_PER_S)
                 for row in rng.choices(range(items), weights, k=per_batch)]
                for b in range(BATCHES_PER_S)] for sec in range(seconds)]
    out: dict[str, Any] = {"items": items, "events_per_s": EVENTS_PER_S,
                           "batches_per_s": BATCHES_PER_S}
    earlier = Popularity(HALF_LIFE)
    store = Store(client, prefix)
    catalog = Catalog(store, "none", 1, HALF_LIFE)
    for name in ("full read", "log"):
        writer = Store(client, prefix, popularity_log_max=0) if name == "full read" else store
        if name == "log":
            await catalog.refresh_popularity()  # a worker's start: the whole hash, once
        idle = await server_counters(client)
        before = await server_counters(client)  # ``idle``..``before``: INFO's own cost
        refresh_s = 0.0
        for second in traffic:
            for batch in second:
                await writer.add_popularity(batch, HALF_LIFE)
            started = time.perf_counter()
            if name == "full read":
                earlier.replace(await store.popularity())
            else:
                await catalog.refresh_popularity()
            refresh_s += time.perf_counter() - started
        after = await server_counters(client)
        calls = {c: (after["calls"].get(c, 0) - before["calls"].get(c, 0)) / seconds
                 for c in after["calls"] if c != "info"}
        out[name] = {
            "commands_per_s": {c: round(n, 1) for c, n in sorted(calls.items()) if n},
            "redis_sent_bytes_per_s": round((after["out"] - before["out"]
                                             - (before["out"] - idle["out"])) / seconds),
            "redis_cpu_ms_per_s": round((after["usec"] - before["usec"]) / seconds / 1000, 2),
            "refresh_ms": round(refresh_s / seconds * 1000, 2)}
    log = f"{key}:log{{{key}}}"
    out["log_entries"] = int(await client.xlen(log))
    out["log_bytes"] = int(await client.memory_usage(log, samples=0) or 0)
    out["follower_equals_hash"] = catalog.popularity.entries == await store.popularity()
    await store.delete_prefix()
    return out


async def server_counters(client: Any) -> dict[str, Any]:
    """Commands run, their CPU time and the bytes Redis sent so far."""
    stats = await client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    usec = sum(int(v["usec"]) for name, v in stats.items() if name != "cmdstat_info")
    net = await client.info("stats")
    return {"calls": calls, "usec": usec, "out": int(net["total_net_output_bytes"]),
            "in": int(net["total_net_input_bytes"])}


# --- report ----------------------------------------------------------------------------
def report(f: dict[str, Any]) -> str:
    lines = [f"Redis footprint ({f['redis'] and 'Redis ' + f['redis']}), {f['data']}: "
             f"{f['users']} users, {f['events']} events, {f['items']} items, {f['dim']}-dim "
             f"vectors; replayed in {f['replay_s']} s", "",
             "bytes per user (mean / median)   format 1 (before)   format 2 (now)"]
    now, old = f["per_user"]["now"], f["per_user"]["format 1"]
    for name, label in (("total", "total MEMORY USAGE"), ("state", "  state hash"),
                        ("seen_key", "  seen zset"), ("history_key", "  history list"),
                        ("vectors", "payload: interest vectors"),
                        ("metadata", "payload: metadata"), ("seen", "payload: seen ids+scores"),
                        ("history", "payload: history entries"),
                        ("redis_overhead", "Redis overhead")):
        lines.append(f"{label:33s}{old[name]['mean']:>9.0f} / {old[name]['median']:<8.0f}"
                     f"{now[name]['mean']:>9.0f} / {now[name]['median']:<8.0f}")
    lines.append(f"{'seen items, history entries':33s}{now['seen_items']['mean']:>9.0f}, "
                 f"{now['history_entries']['mean']:.0f} (mean)")
    e = f.get("per_event")
    if e:
        lines += ["", f"per activity event (format {f['state_format']}, batches of "
                  f"{f.get('batch_size', '?')}): Redis received {e['redis_received_bytes']:,} B, "
                  f"sent {e['redis_sent_bytes']:,} B, CPU {e['redis_cpu_us']} us; commands "
                  f"(scripts' included) {e['commands']}"]
    lp = f["per_user"]["seen_listpack"]
    lines += ["", f"seen zset with zset-max-listpack-entries {lp['zset-max-listpack-entries']} "
              f"(server default {lp['default_limit']}): format 1 {lp['format 1']['mean']:.0f} "
              f"/ {lp['format 1']['median']:.0f}, format 2 {lp['now']['mean']:.0f} / "
              f"{lp['now']['median']:.0f} bytes (mean / median)"]
    p = f["precision"]
    lines += ["", f"precision, {p['users']} users against a float32 fold of their events: "
              f"same interests {p['same_interests']}/{p['users']}, interest cosine min "
              f"{p['interest_cosine_min']} mean {p['interest_cosine_mean']}, same top 10 "
              f"{p['same_top10']}/{p['users']} (mean overlap {p['top10_overlap_mean']})", "",
              f"popularity refresh, one worker at {EVENTS_PER_S} events/s "
              f"({BATCHES_PER_S} batches/s), per second:"]
    for row in f["popularity"]:
        for name in ("full read", "log"):
            r = row[name]
            lines.append(f"  {row['items']:>9,} items, {name:9s}: commands {r['commands_per_s']}, "
                         f"Redis sent {r['redis_sent_bytes_per_s']:,} B, Redis CPU "
                         f"{r['redis_cpu_ms_per_s']} ms, refresh {r['refresh_ms']} ms")
        lines.append(f"  {'':9s}        log: {row['log_entries']} entries, "
                     f"{row['log_bytes']:,} B; follower equals the hash: "
                     f"{row['follower_equals_hash']}")
    return "\n".join(lines)
