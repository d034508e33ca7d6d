"""Redis footprint: compact user state (float16, compressed metadata and history, seen
scores in whole seconds), states of earlier releases still read, and the popularity
prior kept by following a log of the hash's changes instead of reading the hash."""

from __future__ import annotations

import asyncio
import random
import uuid

import numpy as np
import pytest
from redis.crc import key_slot

from stream_app import bench_footprint
from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.model.interest import Interest, UserState
from stream_app.redis_keys import log_of
from stream_app.store import (TRAINER_SCOPE, Store, UserWrite, _decode_history,
                              _decode_state, _encode_history, _encode_state, connect)


def run(coro):
    return asyncio.run(coro)


# A user state exactly as the release before format 2 wrote it (``vec`` float32, ``meta``
# JSON): two 4-dimensional interests.
OLD_VEC = bytes.fromhex("0000003f0000a0bf0000404000000000000000be0000803d00000040000080c0")
OLD_META = (b'{"ts":1700000100.0,"n":7,"off":{"user-activity/3":41},"ids":["e-5","e-6","e-7"],'
            b'"rec":[["i1",1700000000.5],["i9",1700000050.25]],"int":[{"long":2.5,"short":1.75,'
            b'"ts":1700000000.5,"src":"i1","srcw":1.5},{"long":0.75,"short":0.25,'
            b'"ts":1700000100.0,"src":"text:space movies","srcw":0.75}]}')
OLD_HISTORY = (b'{"ts":1700000100.0,"id":"e-7","type":"click","i":[[2.1234,"i1",0]],'
               b'"top":[["i3",1.5],["i4",1.25]],"item":"i9"}')


def _check_old_state(state: UserState, exact: bool = True) -> None:
    assert state.last_ts == 1700000100.0 and state.n_events == 7
    assert state.offsets == {"user-activity/3": 41}
    assert state.recent_ids == ("e-5", "e-6", "e-7")
    assert state.recent_items == (("i1", 1700000000.5), ("i9", 1700000050.25))
    assert [(i.long, i.short, i.ts, i.source, i.source_weight) for i in state.interests] == [
        (2.5, 1.75, 1700000000.5, "i1", 1.5), (0.75, 0.25, 1700000100.0, "text:space movies", 0.75)]
    # once rewritten: float16 of each vector over its largest component
    for got, want in zip(state.interests, ([0.5, -1.25, 3.0, 0.0], [-0.125, 0.0625, 2.0, -4.0])):
        np.testing.assert_allclose(got.vector, want, rtol=0,
                                   atol=0 if exact else 2.0 ** -12 * max(map(abs, want)))


def test_a_state_of_the_previous_release_decodes():
    _check_old_state(_decode_state(OLD_VEC, OLD_META))
    assert _decode_history(OLD_HISTORY)["top"] == [["i3", 1.5], ["i4", 1.25]]


@pytest.mark.integration
def test_a_state_of_the_previous_release_reads_and_is_rewritten_compact(redis_url, prefix):
    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            key = store.keys.state("u")
            await store.r.hset(key, mapping={"vec": OLD_VEC, "meta": OLD_META, "ver": 3})
            await store.r.zadd(store.keys.seen("u"), {"i1": 1700000000.5})
            await store.r.rpush(store.keys.history("u"), OLD_HISTORY)
            rec = (await store.read_users(["u"]))["u"]
            assert rec.version == 3 and rec.seen == {"i1"}
            _check_old_state(rec.state)
            assert (await store.write_users(
                [UserWrite("u", 3, rec.state, [("i9", 1700000050.25)])], 10)).lost == []
            await store.append_history([("u", {**_decode_history(OLD_HISTORY), "id": "e-8"})],
                                       keep=10, ttl_s=0)
            vec, meta = await store.r.hmget(key, "vec", "meta")
            assert vec == b"" and meta[:1] == b"\x02" and len(meta) < len(OLD_META)
            again = (await store.read_users(["u"]))["u"]
            assert again.version == 4 and again.seen == {"i1", "i9"}
            _check_old_state(again.state, exact=False)
            # whole seconds: a listpack zset keeps them as integers
            assert await store.r.zscore(store.keys.seen("u"), "i9") == 1700000050.0
            history = await store.read_history("u")
            assert [h["id"] for h in history] == ["e-7", "e-8"]
            assert history[0] == {**history[1], "id": "e-7"}
            # a deployment still rolling out from the earlier release writes its format
            old = Store(store.r, prefix, state_format=1)
            assert (await old.write_users([UserWrite("u", 4, again.state, [])], 10)).lost == []
            assert (await store.r.hget(key, "meta"))[:1] == b"{"
            _check_old_state(_decode_state(*await store.r.hmget(key, "vec", "meta")),
                             exact=False)
        finally:
            await store.r.aclose()
    run(go())


def _interests(rng: np.random.Generator, scales: list[float], dim: int = 384
               ) -> tuple[Interest, ...]:
    return tuple(Interest((rng.standard_normal(dim) * s).astype(np.float32), 3.0 * s,
                          0.1 * s, 1.7e9 + n, f"i{n}", 0.3 * s) for n, s in enumerate(scales))


def test_float16_state_round_trip_within_tolerance_and_stable():
    rng = np.random.default_rng(5)
    # magnitudes from tiny to beyond float16's range (65504): each interest has its scale
    state = UserState(interests=_interests(rng, [1e-4, 0.7, 40.0, 3e6]), last_ts=1.7e9 + 0.125,
                      n_events=123, offsets={"a/0": 5, "a/1": 9},
                      recent_ids=tuple(str(uuid.UUID(int=n)) for n in range(256)),
                      recent_items=tuple((f"i{n}", 1.7e9 + n / 7) for n in range(50)))
    vec, meta = _encode_state(state)
    assert vec == b"" and len(meta) < sum(map(len, _encode_state(state, 1)))
    back = _decode_state(vec, meta)
    assert (back.last_ts, back.n_events, back.offsets, back.recent_ids, back.recent_items) == \
        (state.last_ts, state.n_events, state.offsets, state.recent_ids, state.recent_items)
    for got, want in zip(back.interests, state.interests):
        assert (got.long, got.short, got.ts, got.source, got.source_weight) == \
            (want.long, want.short, want.ts, want.source, want.source_weight)
        assert got.vector.dtype == np.float32 and np.isfinite(got.vector).all()
        biggest = float(np.abs(want.vector).max())
        assert float(np.abs(got.vector - want.vector).max()) <= 2.0 ** -12 * biggest * 1.001
        cosine = float(got.direction() @ want.direction())
        assert cosine > 0.999999
    again = _decode_state(*_encode_state(back))  # what a read-and-write-back leaves
    for a, b in zip(again.interests, back.interests):
        np.testing.assert_array_equal(a.vector, b.vector)
    assert _decode_state(*_encode_state(UserState())) == UserState()


def test_float16_interests_rank_the_same_top_10():
    """Interests folded from events on a 384-dim catalog (float32), against the same
    interests through format 2: each user's top 10 by each interest and by the blend."""
    rng = np.random.default_rng(11)
    catalog = rng.standard_normal((5000, 384)).astype(np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    same = 0
    for user in range(100):
        chosen = catalog[rng.integers(0, len(catalog), int(rng.integers(5, 300)))]
        # interests as the fold leaves them: decayed sums of the chosen items' vectors
        groups = np.array_split(chosen, 4)
        interests = tuple(Interest((g * rng.uniform(0.2, 3.0, (len(g), 1))).sum(0)
                                   .astype(np.float32), 1.0, 1.0, 0.0, f"s{k}", 1.0)
                          for k, g in enumerate(groups))
        stored = _decode_state(*_encode_state(UserState(interests=interests))).interests
        strengths = rng.uniform(0.1, 2.0, len(interests))
        lists = []
        for state in (interests, stored):
            directions = np.stack([i.direction() for i in state])
            scores = (directions @ catalog.T * strengths[:, None]).max(0)
            lists.append(np.argsort(-scores, kind="stable")[:10].tolist())
        same += lists[0] == lists[1]
    assert same == 100


def test_history_entries_round_trip_compact():
    entries = [
        {"ts": 1.7e9, "id": "e1", "type": "click", "i": [[1.25, "i1", 1], [0.5, "text:", 0]],
         "top": [["i2", 2.3456], ["i3", 1.0]], "item": "i1"},
        {"ts": 1.7e9 + 0.5, "id": "e2", "type": "text", "i": [], "top": [], "text": ""},
        {"ts": 5, "id": "e3", "type": "search", "i": [[0.0, "x", 0]], "top": [["a", 0.1]],
         "text": "space films"},
        {"ts": 1.0, "id": "e4", "type": "click", "i": [], "top": [], "extra": {"a": [1, 2]}},
    ]
    for entry in entries:
        packed = _encode_history(entry)
        assert packed[:1] == b"\x02" and _decode_history(packed) == entry
        assert _decode_history(_encode_history(entry, 1)) == entry
    assert len(_encode_history(entries[0])) < len(_encode_history(entries[0], 1))


# --- popularity: the log against the hash ----------------------------------------------
def test_the_log_key_shares_the_hash_cluster_slot():
    for key in ("stream-app:popularity", "p-1:trainer:popularity", "{tenant}:x:popularity",
                "a{b}c:popularity"):
        log = log_of(key)
        assert log.startswith(key + ":log") and key_slot(log.encode()) == key_slot(key.encode())


def _increments(rng: random.Random, n: int) -> list[tuple[str, float, float]]:
    # repeated items, events out of event-time order
    return [(f"i{rng.randrange(30)}", 1.0, 1_000_000.0 + rng.uniform(-5e5, 5e5))
            for _ in range(n)]


@pytest.mark.integration
@pytest.mark.parametrize("shards", [1, 3])
def test_a_worker_following_the_log_ends_with_the_prior_of_a_full_reload(redis_url, prefix,
                                                                          shards):
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url,
                                             popularity_half_life_s=86400.0,
                                             shared_key_shards=shards)
    hl = settings.popularity_half_life_s

    async def go():
        client = connect(redis_url)
        try:
            stores = [Store.for_settings(client, settings) for _ in range(3)]
            workers = [Catalog.for_settings(st, "enc", 8, settings) for st in stores]
            for w in workers[:2]:
                assert await w.refresh_popularity() == 0  # loading: the whole (empty) hash
            rng = random.Random(4)
            await stores[1].add_popularity([("gone1", 1.0, 1e6), ("gone2", 2.0, 1e6)], hl)
            for n in range(40):  # two workers count; each follows the other
                batch = _increments(rng, rng.randrange(0, 20))
                await stores[n % 2].add_popularity(batch, hl)
                workers[n % 2].popularity.add(batch)  # as Processor.count does
                if n % 3 == 0:
                    await workers[(n + 1) % 2].refresh_popularity()
                if n == 20:  # a deleted item's count goes, on every worker
                    await stores[0].put_items("enc", [], ["gone1", "gone2"])
            await stores[0].add_popularity([(f"big{n}", 1.0, 5.0) for n in range(4500)], hl)
            for w in workers[:2]:
                await w.refresh_popularity()
            exact = await stores[0].popularity()
            assert "gone1" not in exact and len(exact) > 4500
            await workers[2].refresh_popularity()  # a worker that starts now: the hash
            for w in workers:
                assert w.popularity.entries == exact  # bit for bit: the hash's own values
            ids = sorted(exact) + ["unknown"]
            for w in workers[:2]:
                np.testing.assert_array_equal(w.popularity.prior(ids, 2e6),
                                              workers[2].popularity.prior(ids, 2e6))

            # trimmed past a worker's position: it reads the whole hash again
            await stores[0].add_popularity(_increments(rng, 5), hl)
            for shard in range(shards):
                await client.xtrim(stores[0]._popularity_keys(shard=shard)[1], maxlen=0)
            await stores[1].add_popularity(_increments(rng, 30), hl)
            positions = dict(workers[0].popularity.positions)
            assert any([await stores[0].popularity_since(positions[shard], shard) is None
                        for shard in range(shards)])
            await workers[0].refresh_popularity()
            assert workers[0].popularity.entries == await stores[0].popularity()
            assert workers[0].popularity.positions != positions
            # and on a schedule (what a worker of an older release counted is not logged)
            await workers[1].refresh_popularity()  # behind the trim too: the whole hash
            unlogged = stores[0]._popularity_keys(shard=stores[0].popularity_shard("unlogged"))
            await client.hset(unlogged[0], "unlogged", "2,5")
            await workers[1].refresh_popularity()
            assert "unlogged" not in workers[1].popularity.entries
            await workers[1].refresh_popularity(reload_after_s=1e-9)
            assert workers[1].popularity.entries == await stores[0].popularity()
        finally:
            await client.aclose()
    run(go())


@pytest.mark.integration
def test_the_log_is_bounded_and_the_trainer_replica_logs_nothing(redis_url, prefix):
    async def go():
        client = connect(redis_url)
        try:
            store = Store(client, prefix, popularity_log_max=10)
            for n in range(400):
                await store.add_popularity([(f"i{n % 7}", 1.0, float(n))], 3600.0)
            assert await client.xlen(log_of(f"{prefix}:popularity")) < 250  # ~: whole nodes
            trainer = Store(client, prefix, scope=TRAINER_SCOPE)
            await trainer.add_popularity([("i1", 1.0, 5.0)], 3600.0)
            await store.put_items("enc", [], ["i1"])
            assert not await client.exists(log_of(f"{prefix}{TRAINER_SCOPE}:popularity"))
            assert "i1" not in await trainer.popularity()
        finally:
            await client.aclose()
    run(go())


# --- bytes per user -------------------------------------------------------------------
@pytest.mark.integration
def test_bytes_per_user_below_the_bound_and_same_rankings(redis_url, prefix):
    """A small replay shaped like production (UUID event ids, millisecond timestamps,
    log-normal history lengths) through the workers' code: bytes per user of this
    release's format against format 1's, and the precision against a float32 fold."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url,
                                             topic_partitions=bench_footprint.PARTITIONS)
    items, events = bench_footprint.synthetic(24, items=800, median_events=60)

    async def go():
        client = connect(redis_url)
        try:
            processor = await bench_footprint.replay(settings, client, items, events, False)
            sizes = await bench_footprint.per_user(client, processor.store, events, settings,
                                                   listpack=False)
            stored = await processor.store.read_users(sorted({e["user_id"] for e in events}))
            return sizes, bench_footprint.precision(processor, stored, events, settings, 24)
        finally:
            await Store(client, prefix + "-format1").delete_prefix()
            await client.aclose()

    sizes, precision = run(go())
    now, old = sizes["now"], sizes["format 1"]
    print({k: (old[k]["mean"], now[k]["mean"]) for k in now})
    assert now["vectors"]["mean"] == pytest.approx(old["vectors"]["mean"] / 2)
    assert now["metadata"]["mean"] < 0.7 * old["metadata"]["mean"]
    assert now["history"]["mean"] < 0.6 * old["history"]["mean"]
    assert now["state"]["mean"] < 0.65 * old["state"]["mean"]
    assert now["total"]["mean"] < 0.6 * old["total"]["mean"]
    # the stated bound: ~85 items seen, 4 interests of 384 dimensions, 43 snapshots
    # (format 1: ~35 KB)
    assert now["total"]["mean"] < 22_000
    assert precision["same_interests"] == precision["users"] == 24
    assert precision["interest_cosine_min"] > 0.9999
    assert precision["same_top10"] == 24
