"""Sending a catalog through Kafka and following its embedding in the Redis change log."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

from stream_app.config import Settings
from stream_app.kafka_io import Producer, ensure_topics
from stream_app.store import Store, connect


async def load_catalog(s: Settings, bootstrap: str, items: Iterable[dict[str, Any]],
                       wait: bool = True, timeout: float = 600.0, progress: bool = True) -> int:
    """Produce item events (any iterable: a generator makes each record only as it is
    sent, so a million items with vectors never sit in memory at once); with ``wait``,
    return how many the workers have embedded."""
    store = Store(connect(s.redis()), s.key_prefix)
    wanted: set[str] = set()

    def noted() -> Iterator[dict[str, Any]]:
        for item in items:
            wanted.add(str(item["item_id"]))
            yield item

    try:
        since = await store.catalog_head()
        await ensure_topics(bootstrap, [s.topic_items], s.topic_partitions, s.topic_replication)
        async with Producer(bootstrap) as producer:
            await producer.send_all(s.topic_items, noted(), "item_id")
        if not wait:
            return 0
        done: set[str] = set()
        deadline = time.monotonic() + timeout
        with tqdm(total=len(wanted), desc="embedding catalog", unit="item",
                  disable=not progress) as bar:
            while len(done) < len(wanted) and time.monotonic() < deadline:
                since, changed = await store.catalog_changes(since)
                fresh = (set(changed) & wanted) - done
                if fresh:
                    done |= fresh
                    bar.update(len(fresh))
                if not changed:
                    await asyncio.sleep(0.1)
        return len(done)
    finally:
        await store.r.aclose()
