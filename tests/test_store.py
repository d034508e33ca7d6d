"""Store and Processor against the real Redis: CAS, seen trimming, concurrent writers."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record
from stream_app.metrics import Metrics
from stream_app.model.covisit import Choice
from stream_app.model.interest import Interest, UserState
from stream_app.pipeline import Processor, choices
from stream_app.store import TRAINER_SCOPE, Store, UserWrite, connect, shard_of
from tests.fakes import FakeEncoder, ReplyLosingProxy

pytestmark = pytest.mark.integration


def run(coro):
    return asyncio.run(coro)


def _state(n: int) -> UserState:
    interests = tuple(Interest(np.full(4, n + k, np.float32), long=float(n), short=0.5 * n,
                               ts=float(n), source=f"s{k}", source_weight=1.0)
                      for k in range(2))
    return UserState(interests=interests, last_ts=float(n), n_events=n, offsets={"t/0": n},
                     recent_ids=(f"e{n}",), recent_items=((f"i{n}", float(n)), ("j", n + 0.5)))


def test_compare_and_set_rejects_a_stale_writer(redis_url, prefix):
    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            written = await store.write_users([UserWrite("u", 0, _state(1), [("a", 1.0)])], 10)
            assert written.lost == [] and written.failed == {}
            rec = (await store.read_users(["u"]))["u"]
            assert rec.version == 1 and rec.state.n_events == 1 and rec.seen == {"a"}
            # a zombie still holding version 0 must lose, and change nothing
            stale = await store.write_users([UserWrite("u", 0, _state(9), [("z", 9.0)])], 10)
            assert stale.lost == ["u"] and stale.failed == {}
            again = await store.write_users([UserWrite("u", 1, _state(2), [("b", 2.0)])], 10)
            assert again.lost == []
            rec = (await store.read_users(["u"]))["u"]
            assert rec.version == 2 and rec.state.n_events == 2 and rec.seen == {"a", "b"}
            assert _same(rec.state, _state(2))
            assert rec.state.offsets == {"t/0": 2} and rec.state.recent_ids == ("e2",)
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


# co-visit similarities of the counts alone (no count prior): a pair of items chosen once
# each scores 1, and a pair counted twice shows
COUNTS_ALONE = {"covisit_count_prior": 0.0}


async def _processor_with_items(settings: Settings, n_items: int) -> Processor:
    """A worker's processor on ``settings``' Redis and prefix, items i0..i{n-1} loaded."""
    store = Store.for_settings(connect(settings.redis_url), settings)
    enc = FakeEncoder()
    proc = Processor(settings, store, enc,
                     Catalog.for_settings(store, enc.version, enc.dim, settings), Metrics())
    await proc.process_items([Record("items", 0, n, 1.0, None,
                                     f'{{"item_id": "i{n}", "title": "item {n}"}}'.encode())
                              for n in range(n_items)])
    return proc


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
            assert all(len(o.recommendations) == 1 and not o.rejected for o in outs)
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


def test_processor_and_catalog_are_built_from_settings(redis_url, prefix):
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url,
                                             popularity_half_life_s=3600.0)

    async def go():
        store = Store(connect(redis_url), prefix)
        enc = FakeEncoder()
        catalog = Catalog.for_settings(store, enc.version, enc.dim, settings)
        assert (catalog.base_version, catalog.index.dim) == (enc.version, enc.dim)
        assert catalog.popularity.half_life == 3600.0
        assert catalog.covisit_log_max == settings.covisit_log_max
        assert len(catalog.covisits) == 0 and catalog.adapter.is_base
        proc = Processor(settings, store, enc, catalog, Metrics())
        assert proc.catalog is catalog
        await catalog.load()  # an empty deployment loads too
        await store.r.aclose()
    run(go())


def test_catalog_counts_co_visits_as_the_settings_say(redis_url, prefix):
    settings = Settings.from_env({}).replace(covisit_history=3, covisit_keep=7,
                                             covisit_log_max=50)
    catalog = Catalog.for_settings(None, "enc", 8, settings)
    assert (catalog.covisits.history, catalog.covisits.keep) == (3, 7)
    cv = catalog.covisits
    assert (cv.recency, cv.pair_recency, cv.backward, cv.target_exponent, cv.half_life) == (
        settings.covisit_recency, settings.covisit_pair_recency, settings.covisit_backward,
        settings.covisit_target_exponent, settings.covisit_half_life_s)


def test_timed_choices_reach_other_workers_as_counted_and_old_entries_still_count(
        redis_url, prefix):
    """Choices carry their time and their earlier items' times through the log (whole
    seconds), so a worker that reads them holds the counts of the one that made them; an
    entry logged before choices carried times counts as of the latest choice."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url,
                                             covisit_half_life_s=100.0)
    ids = ["x", "y", "z", "w"]
    histories = [["x"], ["y"], ["x", "y"], ["z"]]

    async def go():
        stores = [Store(connect(redis_url), prefix) for _ in range(2)]
        a, b = (Catalog.for_settings(st, "enc", 8, settings) for st in stores)
        t0 = 1_700_000_000.25
        await a.count_covisits([Choice((), "x", t0),
                                Choice(("x",), "y", t0 + 100, (t0,)),
                                Choice(("x", "y"), "z", t0 + 300, (t0, t0 + 100))])
        assert await b.refresh_covisits() == 3
        np.testing.assert_allclose(b.covisits.counts[:3] / b.covisits.counts[0], [1, 2, 8])
        np.testing.assert_allclose(b.covisits.scores(histories, ids),
                                   a.covisits.scores(histories, ids), rtol=1e-5)
        # x-y as of x (t0): 1; y-z as of y: 2; x-z as of x, one choice apart: 0.9
        rows = [a.covisits.rows[i] for i in ("x", "y", "z")]
        c = b.covisits._c.c[np.ix_(rows, rows)] / b.covisits.counts[0]
        np.testing.assert_allclose(c, [[0, 1, 0.9], [1, 0, 2], [0.9, 2, 0]], rtol=1e-5)
        # the entry's c is what older releases write and read: they take it, skip t
        (_, raw), = await stores[0].r.xrange(f"{prefix}:covisit:log")
        assert json.loads(raw[b"c"]) == [["x"], ["y", "x"], ["z", "x", "y"]]
        assert json.loads(raw[b"t"]) == [[t0, []], [t0 + 100, [100]], [t0 + 300, [300, 200]]]
        old = json.dumps([["w", "x"]])  # [chosen, earlier...], no times
        await stores[0].r.xadd(f"{prefix}:covisit:log", {"by": "old-worker", "c": old})
        assert await b.refresh_covisits() == 1
        assert b.covisits.counts[b.covisits.rows["w"]] == pytest.approx(
            b.covisits.counts[b.covisits.rows["z"]])  # as of the latest, z's time
        for st in stores:
            await st.r.aclose()
    run(go())


def test_catalogs_on_one_prefix_share_co_visits_and_count_their_own_once(redis_url, prefix):
    settings = Settings.from_env({}).replace(**COUNTS_ALONE, key_prefix=prefix,
                                             redis_url=redis_url)
    ids = ["x", "y", "z"]
    histories = [["x"], ["y"], ["x", "y"], ["z"]]

    async def go():
        stores = [Store(connect(redis_url), prefix) for _ in range(3)]
        a, b = (Catalog.for_settings(st, "enc", 8, settings) for st in stores[:2])
        assert a.source != b.source
        await a.count_covisits([((), "x"), (("x",), "y")])
        await a.count_covisits([(("x", "y"), "z")])
        assert len(a.covisits) == 3  # counted here at once
        assert await b.refresh_covisits() == 3
        assert await a.refresh_covisits() == 0  # its own entries: counted when made
        np.testing.assert_array_equal(a.covisits.counts[:3], [1, 1, 1])
        np.testing.assert_array_equal(b.covisits.scores(histories, ids),
                                      a.covisits.scores(histories, ids))
        assert a.covisits.scores([["x"]], ["y"])[0, 0] == pytest.approx(1.0)

        await b.count_covisits([(("z",), "x")])  # the other way round
        assert await a.refresh_covisits() == 1
        assert await b.refresh_covisits() == 0 and await a.refresh_covisits() == 0
        np.testing.assert_array_equal(a.covisits.counts[:3], [2, 1, 1])
        np.testing.assert_array_equal(b.covisits.scores(histories, ids),
                                      a.covisits.scores(histories, ids))

        await a.count_covisits([(("y",), "z")], share=False)  # the trainer's: kept to itself
        assert await b.refresh_covisits() == 0
        assert a.covisits.counts[2] == 2 and b.covisits.counts[2] == 1
        await a.count_covisits([])  # nothing chosen: nothing logged
        assert await b.refresh_covisits() == 0

        # more entries than one read returns: all applied, in order
        for n in range(1005):
            await b.count_covisits([(("x",), f"n{n % 5}")])
        assert await a.refresh_covisits() == 1005
        np.testing.assert_array_equal(
            a.covisits.scores([["x"]], [f"n{k}" for k in range(5)]),
            b.covisits.scores([["x"]], [f"n{k}" for k in range(5)]))

        # a catalog that starts later counts what the log holds (as loading does)
        c = Catalog.for_settings(stores[2], "enc", 8, settings)
        await c.load()
        everyone = ids + [f"n{k}" for k in range(5)]
        np.testing.assert_array_equal(c.covisits.scores(histories, everyone),
                                      b.covisits.scores(histories, everyone))
        for st in stores:
            await st.r.aclose()
    run(go())


def test_a_worker_counts_each_batchs_choices_after_ranking_and_shares_them(redis_url, prefix):
    settings = Settings.from_env({}).replace(**COUNTS_ALONE, key_prefix=prefix,
                                             redis_url=redis_url)

    async def go():
        stores = [Store(connect(redis_url), prefix) for _ in range(2)]
        enc = FakeEncoder()
        procs = [Processor(settings, st, enc, Catalog.for_settings(st, enc.version, enc.dim,
                                                                   settings), Metrics())
                 for st in stores]
        items = [Record("items", 0, n, 1.0, None,
                        f'{{"item_id": "i{n}", "title": "item {n}"}}'.encode())
                 for n in range(6)]
        await procs[0].process_items(items)
        await procs[1].catalog.load()
        first = await procs[0].process_activity(_records("act", "u", ["i0"], start=0))
        assert first.recommendations and len(procs[0].catalog.covisits) == 1
        skip = Record("act", 0, 1, 1001.0, b"u",
                      b'{"user_id": "u", "type": "skip", "item_id": "i5", "ts": 1001.5}')
        await procs[0].process_activity([skip])  # not a choice: not counted
        assert procs[0].catalog.covisits.counts[:1].tolist() == [1]
        assert "i5" not in procs[0].catalog.covisits.rows
        out = await procs[0].process_activity(_records("act", "u", ["i1", "i2"], start=2))
        assert len(out.recommendations) == 2
        # i1 after i0, then i2 after both (i0 two choices back: a pair recency's weight):
        # counted, and logged for the other worker
        cv = procs[0].catalog.covisits
        np.testing.assert_allclose(cv.scores([["i0"]], ["i1", "i2", "i3"]),
                                   [[1.0, settings.covisit_pair_recency, 0.0]], rtol=1e-6)
        assert await procs[1].catalog.refresh_covisits() == 3
        np.testing.assert_array_equal(procs[1].catalog.covisits.scores([["i0"], ["i2"]],
                                                                         procs[1].catalog.index.ids),
                                      cv.scores([["i0"], ["i2"]], procs[0].catalog.index.ids))
        # the popularity of the same events was counted too (Processor.count)
        assert set(await stores[1].popularity()) == {"i0", "i1", "i2"}
        for st in stores:
            await st.r.aclose()
    run(go())


def test_choices_are_the_applied_choice_events_with_what_came_before():
    class Event:
        def __init__(self, item_id, type_):
            self.item_id, self.type, self.ts = item_id, type_, 50.0

    class Snap:
        def __init__(self, before, item_id, type_, applied=True):
            self.before = UserState(recent_items=tuple((i, float(n)) for n, i in
                                                       enumerate(before)))
            self.pending = type("P", (), {"event": Event(item_id, type_)})()
            self.applied = applied

    snaps = [Snap(("a",), "b", "click"), Snap(("a", "b"), "c", "purchase"),
             Snap(("a",), "z", "skip"), Snap(("a",), None, "search"),
             Snap(("a",), "y", "click", applied=False)]
    # with when each was chosen and when the earlier ones were
    assert choices(snaps) == [(("a",), "b", 50.0, (0.0,)), (("a", "b"), "c", 50.0, (0.0, 1.0))]


def test_a_batch_retried_after_its_state_was_written_counts_everything_once(redis_url, prefix):
    """Redis fails between the state write and the counts (OOM, a failover): the retry
    finds the events applied and adds what the failed attempt owed, once."""
    settings = Settings.from_env({}).replace(**COUNTS_ALONE, key_prefix=prefix,
                                             redis_url=redis_url)

    async def go():
        proc = await _processor_with_items(settings, 4)
        store = proc.store
        real = store.add_covisits
        failures = iter([OutOfMemoryError("OOM command not allowed")])

        async def flaky(*args, **kwargs):
            for exc in failures:
                raise exc
            return await real(*args, **kwargs)

        store.add_covisits = flaky  # popularity goes through, then the co-visit log fails
        batch = _records("act", "u", ["i0", "i1", "i2"], start=0)
        with pytest.raises(OutOfMemoryError):
            await proc.process_activity(batch)
        out = await proc.process_activity(batch)
        assert (out.counts["applied"], out.counts["duplicates"]) == (3, 0)
        assert len(out.recommendations) == 3
        popularity = await store.popularity()
        assert {i: round(c) for i, (c, _) in popularity.items()} == {"i0": 1, "i1": 1, "i2": 1}
        np.testing.assert_allclose(proc.catalog.covisits.scores([["i0"]], ["i1", "i2"]),
                                   [[1.0, settings.covisit_pair_recency]], rtol=1e-6)
        again = await proc.process_activity(batch)  # a redelivery: nothing owed any more
        assert (again.counts["applied"], again.counts["duplicates"]) == (0, 3)
        assert {i: round(c) for i, (c, _) in (await store.popularity()).items()} == \
            {"i0": 1, "i1": 1, "i2": 1}
        await store.r.aclose()
    run(go())


def test_a_batch_hands_its_recommendations_over_before_it_counts(redis_url, prefix):
    """``early`` gets the ranked lists before any popularity or co-visit is written (the
    worker sends them while it counts); a retry after a failed count hands them over again
    (ranked with what the failed attempt counted) and counts once."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        proc = await _processor_with_items(settings, 4)
        store = proc.store
        handed: list[tuple[list, dict]] = []

        async def early(out):
            handed.append(([rec["event_id"] for _, rec in out.recommendations],
                           await store.popularity()))

        real, failures = store.add_covisits, iter([OutOfMemoryError("OOM (test)")])

        async def flaky(*args, **kwargs):
            for exc in failures:
                raise exc
            return await real(*args, **kwargs)

        store.add_covisits = flaky
        batch = _records("act", "u", ["i0", "i1", "i2"], start=0)
        with pytest.raises(OutOfMemoryError):
            await proc.process_activity(batch, early)
        out = await proc.process_activity(batch, early)
        await store.r.aclose()
        return handed, out

    handed, out = run(go())
    assert len(handed) == 2  # the failed attempt's, then the retry's
    first, second = handed
    assert len(first[0]) == 3 and first[1] == {}  # ranked, nothing counted yet
    assert second[0] == first[0] == [rec["event_id"] for _, rec in out.recommendations]
    assert out.counts["applied"] == 3 and len(second[1]) == 3  # popularity: the first try's


def test_sharded_counts_a_batch_once_when_one_shard_fails(redis_url, prefix):
    """With the shared counts over several keys, one shard's popularity call can fail
    while the others go through: the retry counts only the failed shard's items, and
    every worker reads the same values as a single key would give."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url,
                                             shared_key_shards=3)

    async def go():
        proc = await _processor_with_items(settings, 12)
        store = proc.store
        items = [f"i{n}" for n in range(12)]
        shards = {store.popularity_shard(i) for i in items}
        assert shards == {0, 1, 2}  # the batch spans every shard
        failing = store._popularity_keys(shard=1)[0]
        real, failures = store._popularity, iter([OutOfMemoryError("OOM (test)")])

        async def one_shard_fails(keys, args, client=None):
            if keys[1] == failing:
                for exc in failures:
                    raise exc
            return await real(keys=keys, args=args, client=client)

        store._popularity = one_shard_fails
        batch = _records("act", "u", items, start=0)
        with pytest.raises(OutOfMemoryError):
            await proc.process_activity(batch)
        out = await proc.process_activity(batch)
        assert (out.counts["applied"], out.counts["duplicates"]) == (12, 0)
        counted = {i: round(c) for i, (c, _) in (await store.popularity()).items()}
        assert counted == {i: 1 for i in items}
        assert {i: round(c) for i, (c, _) in proc.catalog.popularity.entries.items()} == counted
        for shard in range(3):  # each item in its own shard's key, nowhere else
            key = store._popularity_keys(shard=shard)[0]
            held = {k.decode() for k in await store.r.hkeys(key)}
            assert held == {i for i in items if store.popularity_shard(i) == shard}

        # another worker: the same values, from the whole hash and then from the logs
        other = Catalog.for_settings(Store.for_settings(store.r, settings), "fake-1", 8,
                                     settings)
        await other.refresh_popularity()
        assert other.popularity.entries == await store.popularity()
        await proc.process_activity(_records("act", "v", items[:5], start=100))
        assert await other.refresh_popularity() == 5
        assert other.popularity.entries == await store.popularity()
        # co-visits: each worker logs to its own shard, every worker reads all of them
        assert await other.refresh_covisits() == 12 + 5  # a user's first choice counts too
        # shard 0 keeps the names of one key, which releases before shards wrote
        assert store._popularity_keys()[:2] == (f"{prefix}:popularity",
                                                f"{prefix}:popularity:log{{{prefix}:popularity}}")
        assert store.keys.covisit_log(0) == f"{prefix}:covisit:log"
        assert store._popularity_keys(shard=2)[0] == f"{prefix}:popularity:2"
        logged = shard_of(proc.catalog.source, 3)
        assert [await store.r.xlen(store.keys.covisit_log(shard)) > 0 for shard in range(3)] == \
            [shard == logged for shard in range(3)]
        assert await proc.catalog.refresh_covisits() == 0  # its own: counted when made
        await store.r.aclose()
    run(go())


def test_a_batch_whose_state_writes_went_through_for_some_users_counts_them_on_retry(
        redis_url, prefix):
    """A pipeline is not atomic: at Redis's memory limit some users' writes go through
    and others fail. The batch is retried; the retry finds the first users' events applied
    and still counts them (applied, popularity, co-visits), once."""
    settings = Settings.from_env({}).replace(**COUNTS_ALONE, key_prefix=prefix,
                                             redis_url=redis_url)

    async def go():
        proc = await _processor_with_items(settings, 4)
        store = proc.store
        # in one pipeline, "b"'s compare-and-set fails in Redis and "a"'s goes through
        cas, refuse = store._cas, store.r.register_script(
            "return redis.error_reply('OOM command not allowed (test)')")
        blocked = {store.keys.state("b")}

        def cas_or_refuse(keys, args, client):
            return (refuse if keys[0] in blocked else cas)(keys=keys, args=args, client=client)
        store._cas = cas_or_refuse
        batch = _records("act", "a", ["i0", "i1"], start=0) + \
            _records("act", "b", ["i2", "i3"], start=2)
        written = await store.write_users(
            [UserWrite("a2", 0, UserState(), []), UserWrite("b", 0, UserState(), [])], 10)
        assert written.lost == [] and list(written.failed) == ["b"]
        with pytest.raises(OutOfMemoryError):
            await proc.process_activity(batch)
        users = await store.read_users(["a", "b"])
        assert (users["a"].state.n_events, users["b"].state.n_events) == (2, 0)
        blocked.clear()
        out = await proc.process_activity(batch)  # the retry
        assert (out.counts["applied"], out.counts["duplicates"]) == (4, 0)
        popularity = await store.popularity()
        assert {i: round(c) for i, (c, _) in popularity.items()} == \
            {"i0": 1, "i1": 1, "i2": 1, "i3": 1}
        np.testing.assert_allclose(proc.catalog.covisits.scores([["i0"], ["i2"]], ["i1", "i3"]),
                                   [[1.0, 0.0], [0.0, 1.0]], rtol=1e-6)
        again = await proc.process_activity(batch)  # a redelivery: nothing owed any more
        assert (again.counts["applied"], again.counts["duplicates"]) == (0, 4)
        await store.r.aclose()
    run(go())


@pytest.mark.parametrize("script", ["_cas", "_popularity", "_covisit", "_history"])
def test_a_write_whose_reply_was_lost_counts_once(redis_url, prefix, script):
    """Redis ran a call, the connection dropped before its reply: redis-py sends it again
    by itself (and the batch is retried when that fails too). The user's state, popularity,
    co-visit log and history each take the batch once, and every event counts as applied."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        proxy = ReplyLosingProxy(redis_url)
        settings_via = settings.replace(redis_url=await proxy.start())
        proc = await _processor_with_items(settings_via, 4)
        store = proc.store
        proxy.arm(b"EVALSHA\r\n$40\r\n" + getattr(store, script).sha.encode())
        batch = _records("act", "a", ["i0", "i1"], start=0) + \
            _records("act", "b", ["i2", "i3"], start=2)
        try:
            out = await proc.process_activity(batch)
        except RedisConnectionError:  # not recovered by redis-py's own retry: the
            out = await proc.process_activity(batch)  # worker retries the batch
        assert proxy.lost == 1
        assert (out.counts["applied"], out.counts["duplicates"]) == (4, 0)
        assert len(out.recommendations) == 4
        popularity = await store.popularity()
        assert {i: round(c, 6) for i, (c, _) in popularity.items()} == \
            {"i0": 1, "i1": 1, "i2": 1, "i3": 1}
        _, logged = await store.covisits_since("0-0")
        assert [[(tuple(c.previous), c.chosen) for c in entry] for _, entry in logged] == \
            [[((), "i0"), (("i0",), "i1"), ((), "i2"), (("i2",), "i3")]]
        for user, items in (("a", ["i0", "i1"]), ("b", ["i2", "i3"])):
            history = await store.read_history(user)
            assert sorted(h["ts"] for h in history) == \
                [1000.0 + n for n in range(4) if f"i{n}" in items], history
        again = await proc.process_activity(batch)  # a redelivery: nothing owed any more
        assert (again.counts["applied"], again.counts["duplicates"]) == (0, 4)
        assert {i: round(c, 6) for i, (c, _) in (await store.popularity()).items()} == \
            {"i0": 1, "i1": 1, "i2": 1, "i3": 1}
        await store.r.aclose()
        await proxy.close()
    run(go())


def test_deleted_items_lose_their_popularity_and_old_encoders_can_be_pruned(redis_url, prefix):
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        proc = await _processor_with_items(settings, 3)
        store = proc.store
        trainer_store = Store(store.r, prefix, scope=TRAINER_SCOPE)
        await proc.process_activity(_records("act", "u", ["i0", "i1"], start=0))
        await trainer_store.add_popularity([("i1", 1.0, 1000.0)], 86400.0)
        await proc.process_items([Record("items", 0, 9, 2.0, None,
                                         b'{"item_id": "i1", "deleted": true}')])
        assert set(await store.popularity()) == {"i0"}
        assert set(await trainer_store.popularity()) == set()
        # vectors of an encoder no worker uses any more
        await store.put_text_vectors("old-encoder", {"k": np.ones(4, np.float32)})
        await store.put_items("old-encoder", [("i0", np.ones(4, np.float32), {})], [])
        assert await store.prune_encoders(keep=proc.encoder.version) == ["old-encoder"]
        assert await store.item_vectors("old-encoder", ["i0"]) == {}
        assert set(await store.item_vectors(proc.encoder.version, ["i0", "i2"])) == {"i0", "i2"}
        await store.r.aclose()
    run(go())


def test_a_write_that_names_a_writer_must_find_it(redis_url, prefix):
    """The compare-and-set checks the writer's token too, when the write names one: a copy
    made before the keys expired and were written up to the same version again loses."""
    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            assert (await store.write_users(
                [UserWrite("u", 0, _state(1), [("a", 1.0)], token="t1", expected_writer="")],
                10)).lost == []
            wrong = UserWrite("u", 1, _state(9), [("z", 9.0)], token="t9",
                              expected_writer="t0")
            assert (await store.write_users([wrong], 10)).lost == ["u"]
            assert (await store.write_users(
                [UserWrite("u", 1, _state(2), [("b", 2.0)], token="t2", expected_writer="t1")],
                10)).lost == []
            rec = (await store.read_users(["u"]))["u"]
            assert (rec.version, rec.writer, rec.seen) == (2, "t2", {"a", "b"})
            # naming none: the version alone, as before
            assert (await store.write_users([UserWrite("u", 2, _state(3), [])], 10)).lost == []
        finally:
            await store.r.aclose()
    run(go())


def _two_users_batches(rounds: int) -> list[list[Record]]:
    return [_records("act", "a", [f"i{r % 7}", f"i{(r + 3) % 7}"], start=4 * r)
            + _records("act", "b", [f"i{(r + 1) % 7}"], start=4 * r + 2)
            for r in range(rounds)]


def test_users_kept_between_batches_rank_exactly_as_users_read_back(redis_url, prefix):
    """A worker that keeps its users' state (``STREAM_APP_USER_CACHE_MB``) folds each batch
    into what Redis holds, to the bit: the lists and their scores are those of a worker
    that reads every user back. And it does skip the reads."""
    async def lists(cache: int, sub: str) -> tuple[list, int]:
        settings = Settings.from_env({}).replace(key_prefix=prefix + sub, redis_url=redis_url,
                                                 user_cache_mb=cache)
        proc = await _processor_with_items(settings, 7)
        store = proc.store
        read = store.read_users
        kept = 0

        async def counting(user_ids, known=False):
            nonlocal kept
            out = await read(user_ids, known)
            kept += sum(r.known for r in out.values())
            return out
        store.read_users = counting
        got = []
        for batch in _two_users_batches(6):
            out = await proc.process_activity(batch)
            got += [(u, [(i["item_id"], i["score"]) for i in rec["items"]])
                    for u, rec in out.recommendations]
        state = (await read(["a", "b"]))
        await store.delete_prefix()
        await store.r.aclose()
        return got + [(u, r.state.n_events, sorted(r.seen)) for u, r in state.items()], kept

    async def go():
        return await lists(0, "-read"), await lists(1000, "-kept")

    (read_back, none_kept), (kept_lists, kept) = run(go())
    assert none_kept == 0 and kept == 2 * 5  # both users, every batch after the first
    assert kept_lists == read_back


def test_a_kept_user_another_writer_moved_on_is_read_again(redis_url, prefix):
    """Worker 1 keeps user u; worker 2 writes u (the partition moved), then the keys
    expire and worker 2 writes u up to the same version again. Each time worker 1's next
    batch loses the compare-and-set, reads u and folds into what is there: no event lost,
    none counted twice, and no backoff or conflict counted for a stale copy."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        one = await _processor_with_items(settings, 6)
        two = Processor(settings, Store.for_settings(connect(redis_url), settings),
                        one.encoder, one.catalog, Metrics())
        await one.process_activity(_records("act", "u", ["i0"], start=0))
        await two.process_activity(_records("act", "u", ["i1"], start=1))
        await one.process_activity(_records("act", "u", ["i2"], start=2))
        rec = (await one.store.read_users(["u"]))["u"]
        assert (rec.version, rec.state.n_events, rec.seen) == (3, 3, {"i0", "i1", "i2"})
        assert one.metrics.user_cache_stale._value.get() == 1
        # expired, then written by the other up to the version worker 1 holds
        await one.store.r.delete(one.store.keys.state("u"), one.store.keys.seen("u"))
        for n, item in enumerate(["i3", "i4", "i5"]):
            await two.process_activity(_records("act", "u", [item], start=3 + n))
        await one.process_activity(_records("act", "u", ["i0"], start=6))
        rec = (await one.store.read_users(["u"]))["u"]
        assert (rec.version, rec.state.n_events) == (4, 4)
        assert rec.seen == {"i3", "i4", "i5", "i0"}
        # folded into what worker 2 wrote, not into worker 1's copy (i0..i2, gone)
        assert [i for i, _ in rec.state.recent_items] == ["i3", "i4", "i5", "i0"]
        assert one.metrics.user_cache_stale._value.get() == 2
        assert one.metrics.cas_conflicts._value.get() == 0
        for proc in (one, two):
            await proc.store.r.aclose()
    run(go())


def test_a_redelivery_the_copy_calls_applied_reads_the_user(redis_url, prefix):
    """A batch that would write nothing (each event already in the kept copy) has no
    compare-and-set to check the copy, so the user is read: after another worker wrote
    the user, the redelivered batch is ranked on what is there (that worker's item
    excluded as seen); after Redis lost the user, the redelivered events are applied
    again and written back, as a worker that keeps nothing would."""
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        one = await _processor_with_items(settings, 6)
        two = Processor(settings, Store.for_settings(connect(redis_url), settings),
                        one.encoder, one.catalog, Metrics())
        first = _records("act", "u", ["i0"], start=0)
        await one.process_activity(first)
        await two.process_activity(_records("act", "u", ["i1"], start=1))
        again = await one.process_activity(first)  # redelivered to worker 1
        assert (again.counts["applied"], again.counts["duplicates"]) == (0, 1)
        (_, rec), = again.recommendations
        assert not {i["item_id"] for i in rec["items"]} & {"i0", "i1"}
        # Redis loses the user (a failover, a restore), then the events come again
        await one.store.r.delete(one.store.keys.state("u"), one.store.keys.seen("u"))
        replayed = await one.process_activity(first)
        assert replayed.counts["applied"] == 1
        stored = (await one.store.read_users(["u"]))["u"]
        assert (stored.version, stored.state.n_events, stored.seen) == (1, 1, {"i0"})
        for proc in (one, two):
            await proc.store.r.aclose()
    run(go())
