"""Store and Processor against the real Redis: CAS, seen trimming, concurrent writers."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import numpy as np
import pytest

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record
from stream_app.metrics import Metrics
from stream_app.model.interest import Interest, UserState
from stream_app.pipeline import Processor
from stream_app.store import Store, UserWrite, connect

pytestmark = pytest.mark.integration


class FakeEncoder:
    """Deterministic unit vectors from a hash: the model stays behind its interface."""

    dim = 8
    version = "fake-1"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:8]
                        .astype(np.float32) - 127.5 for t in texts]) if texts else \
            np.zeros((0, 8), np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def prefix(redis_url):
    p = f"satest-store-{uuid.uuid4().hex[:8]}"
    yield p

    async def clean():
        store = Store(connect(redis_url), p)
        await store.delete_prefix()
        await store.r.aclose()
    run(clean())


def _state(n: int) -> UserState:
    interests = tuple(Interest(np.full(4, n + k, np.float32), long=float(n), short=0.5 * n,
                               ts=float(n), source=f"s{k}", source_weight=1.0)
                      for k in range(2))
    return UserState(interests=interests, last_ts=float(n), n_events=n, offsets={0: n},
                     recent_ids=(f"e{n}",), recent_items=((f"i{n}", float(n)), ("j", n + 0.5)))


def test_compare_and_set_rejects_a_stale_writer(redis_url, prefix):
    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            assert await store.write_users([UserWrite("u", 0, _state(1), [("a", 1.0)])], 10) == []
            rec = (await store.read_users(["u"]))["u"]
            assert rec.version == 1 and rec.state.n_events == 1 and rec.seen == {"a"}
            # a zombie still holding version 0 must lose, and change nothing
            assert await store.write_users([UserWrite("u", 0, _state(9), [("z", 9.0)])], 10) == ["u"]
            assert await store.write_users([UserWrite("u", 1, _state(2), [("b", 2.0)])], 10) == []
            rec = (await store.read_users(["u"]))["u"]
            assert rec.version == 2 and rec.state.n_events == 2 and rec.seen == {"a", "b"}
            assert _same(rec.state, _state(2))
            assert rec.state.offsets == {0: 2} and rec.state.recent_ids == ("e2",)
        finally:
            await store.r.aclose()
    run(go())


def test_seen_set_keeps_the_most_recent(redis_url, prefix):
    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            seen = [(f"i{n}", float(n)) for n in range(10)]
            await store.write_users([UserWrite("u", 0, _state(1), seen)], 4)
            rec = (await store.read_users(["u"]))["u"]
            assert rec.seen == {"i6", "i7", "i8", "i9"}
        finally:
            await store.r.aclose()
    run(go())


def _same(a: UserState, b: UserState) -> bool:
    """Equal states (numpy vectors compared by value)."""
    return (len(a.interests) == len(b.interests)
            and all(np.array_equal(x.vector, y.vector) and
                    (x.long, x.short, x.ts, x.source, x.source_weight) ==
                    (y.long, y.short, y.ts, y.source, y.source_weight)
                    for x, y in zip(a.interests, b.interests))
            and (a.last_ts, a.n_events, a.offsets, a.recent_ids, a.recent_items) ==
            (b.last_ts, b.n_events, b.offsets, b.recent_ids, b.recent_items))


def _records(topic, user, items, start):
    return [Record(topic, 0, start + n, 1000.0 + n, user.encode(),
                   (f'{{"user_id": "{user}", "type": "click", "item_id": "{item}", '
                    f'"ts": {1000.0 + start + n}}}').encode())
            for n, item in enumerate(items)]


def test_concurrent_processors_lose_no_update(redis_url, prefix):
    """Two workers (a zombie and its successor) write the same user at once."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        procs, stores = [], []
        for _ in range(2):
            store = Store(connect(redis_url), prefix)
            stores.append(store)
            enc = FakeEncoder()
            proc = Processor(settings, store, enc, Catalog(store, enc.version, enc.dim, 86400.0), Metrics())
            procs.append(proc)
        items = [{"item_id": f"i{n}", "title": f"item {n}"} for n in range(20)]
        item_recs = [Record("items", 0, n, 1.0, None, (f'{{"item_id": "i{n}", '
                                                      f'"title": "item {n}"}}').encode())
                     for n in range(len(items))]
        await procs[0].process_items(item_recs)
        await procs[1].catalog.load()
        # disjoint events (different partitions' offsets) for the same user, interleaved
        rounds = 10
        for r in range(rounds):
            a = _records("act", "shared", [f"i{r}"], start=r * 2)
            b = [Record("act", 1, rec.offset, rec.timestamp, rec.key, rec.value)
                 for rec in _records("act", "shared", [f"i{r + 10}"], start=r * 2 + 1)]
            outs = await asyncio.gather(procs[0].process_activity(a),
                                        procs[1].process_activity(b))
            assert all(len(o.recommendations) == 1 and not o.dead_letters for o in outs)
        state = (await stores[0].read_users(["shared"]))["shared"]
        conflicts = sum(p.metrics.cas_conflicts._value.get() for p in procs)
        for s in stores:
            await s.r.aclose()
        return state, conflicts

    state, conflicts = run(go())
    assert state.state.n_events == 20
    assert len(state.seen) == 20
    assert conflicts >= 1  # the race really happened and was resolved by retrying


def test_item_text_is_encoded_once(redis_url, prefix):
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        store = Store(connect(redis_url), prefix)
        enc = FakeEncoder()
        proc = Processor(settings, store, enc, Catalog(store, enc.version, enc.dim, 86400.0), Metrics())
        rec = Record("items", 0, 0, 1.0, b"x", b'{"item_id": "x", "title": "same text"}')
        await proc.process_items([rec])
        await proc.process_items([rec])  # re-sent unchanged: served from the Redis text cache
        fresh = Processor(settings, store, enc, Catalog(store, enc.version, enc.dim, 86400.0), Metrics())
        await fresh.process_items([rec])
        calls = enc.calls
        await store.r.aclose()
        return calls
    assert run(go()) == 1
