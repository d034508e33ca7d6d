"""`stream-app replay`: a dataset through Kafka into a running system, judged like `eval`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from tqdm import tqdm

from stream_app.config import Settings
from stream_app.evaluation.protocol import judge
from stream_app.kafka_io import Producer, consume, ensure_topics
from stream_app.loading import load_catalog


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)
    return {"p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


async def replay(s: Settings, items: Sequence[dict], events: Sequence[dict],
                 rate: float = 0.0, idle_timeout: float = 60.0,
                 progress: bool = True) -> dict[str, Any]:
    """Catalog first (waits until embedded), then every event in order; collects the
    recommendation each event triggered."""
    bootstrap = s.kafka_bootstrap_servers
    await ensure_topics(bootstrap, [s.topic_items, s.topic_activity, s.topic_recommendations],
                        s.topic_partitions, s.topic_replication)
    embedded = await load_catalog(s, bootstrap, items, progress=progress)
    wanted = {e["event_id"] for e in events}
    recs: dict[str, list[str]] = {}
    latency: list[float] = []
    sent: dict[str, float] = {}
    model_versions: set[str] = set()
    done = asyncio.Event()

    async def collect() -> None:
        with tqdm(total=len(wanted), desc="recommendations", unit="event",
                  disable=not progress) as bar:
            async for _, rec in consume(bootstrap, s.topic_recommendations,
                                        idle_timeout=idle_timeout):
                event_id = rec.get("event_id") if isinstance(rec, dict) else None
                if event_id not in wanted or event_id in recs:
                    continue
                recs[event_id] = [i["item_id"] for i in rec["items"]]
                model_versions.add(rec["model_version"])
                if event_id in sent:
                    latency.append(rec["emitted_at"] - sent[event_id])
                bar.update(1)
                if len(recs) == len(wanted):
                    break
        done.set()

    reader = asyncio.create_task(collect())
    await asyncio.sleep(0.5)  # the reader is positioned before the first event goes out
    started = time.perf_counter()
    async with Producer(bootstrap) as producer:
        for n, event in enumerate(events):
            await producer.send(s.topic_activity, event, key=str(event["user_id"]))
            sent[event["event_id"]] = time.time()
            if rate > 0 and n % 100 == 99:
                await producer.flush()
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
    await done.wait()
    await reader
    seconds = time.perf_counter() - started
    return {"catalog_items": embedded, "events": len(events), "rate_limit": rate,
            "recommendations": len(recs),
            **judge(events, recs).as_dict(),
            "events_per_s": round(len(recs) / seconds, 1), "seconds": round(seconds, 1),
            "latency": _percentiles(latency), "model_versions": sorted(model_versions)}
