"""Sending a catalog through Kafka and following its embedding in the Redis change log."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from tqdm import tqdm

from stream_app.config import Settings
from stream_app.kafka_io import Producer, ensure_topics
from stream_app.store import Store, connect


async def load_catalog(s: Settings, bootstrap: str, items: Sequence[dict[str, Any]],
                       wait: bool = True, timeout: float = 600.0, progress: bool = True) -> int:
    """Produce item events; with ``wait``, return how many the workers have embedded."""
    store = Store(connect(s.redis()), s.key_prefix)
    try:
        since = await store.catalog_head()
        await ensure_topics(bootstrap, [s.topic_items], s.topic_partitions, s.topic_replication)
        async with Producer(bootstrap) as producer:
            await producer.send_all(s.topic_items, items, "item_id")
        if not wait:
            return 0
        wanted = {str(i["item_id"]) for i in items}
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
