"""The trainer against the real Redis: examples, the no-future rule, rounds, promotion,
refusal, rollback, and a worker's catalog following the registry."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import numpy as np
import pytest
import torch

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.evaluation.offline import to_records
from stream_app.metrics import Metrics
from stream_app.model.adapter import Adapter, Blend
from stream_app.model.interest import UserState
from stream_app.model.sequence import fit_sequence, windows_of
from stream_app.pipeline import Processor
from stream_app.store import TRAINER_SCOPE, Store, connect
from stream_app.trainer import Trainer, outcome
from stream_app.trainer_app import feedback_rejected
from stream_app.versions import Registry, follow
from tests.fakes import FakeEncoder

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

N_ITEMS = 40
T0 = 1_700_000_000.0


def _settings(redis_url: str, **overrides: Any) -> Settings:
    return Settings.from_env({}).replace(
        redis_url=redis_url, key_prefix=f"satest-trainer-{uuid.uuid4().hex[:8]}",
        topic_partitions=2, trainer_batch_size=10**6, trainer_max_wait_s=math.inf,
        # a small sequence model, trained enough to learn the 40 successors in one round
        trainer_epochs=20.0, trainer_lr=1e-2, trainer_step_size=32, sequence_dim=16,
        sequence_blocks=1, sequence_heads=1, sequence_dropout=0.0, recent_items=8,
        # the plain encoder ranks by interests alone (co-visits would learn the pairs too)
        popularity_weight=0.0, covisit_weight=0.0, **overrides)


class World:
    """A worker's processor and a trainer on one Redis prefix; records as Kafka gives them."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.client = connect(s.redis_url)
        self.encoder = FakeEncoder()
        self.store = Store.for_settings(self.client, s)
        self.catalog = Catalog.for_settings(self.store, self.encoder.version,
                                            self.encoder.dim, s.replace(
                                                popularity_half_life_s=math.inf))
        self.processor = Processor(s, self.store, self.encoder, self.catalog, Metrics())
        self.registry = Registry(self.client, s.key_prefix, self.encoder.version)
        self.offsets: dict[str, dict[int, int]] = {}
        self.trainers: list[Trainer] = []

    async def __aenter__(self) -> "World":
        items = [{"item_id": f"i{n}", "title": f"item {n}", "ts": T0} for n in range(N_ITEMS)]
        await self.processor.process_items(self.records(self.s.topic_items, items, "item_id"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for trainer in self.trainers:
            trainer.close()
        await self.store.delete_prefix()
        await self.client.aclose()

    def records(self, topic: str, values: list[dict], key: str = "user_id") -> list:
        return to_records(topic, values, key, self.s.topic_partitions,
                          self.offsets.setdefault(topic, {}))

    async def trainer(self, s: Settings | None = None) -> Trainer:
        s = s or self.s
        store = Store.for_settings(self.client, s, scope=TRAINER_SCOPE)
        trainer = Trainer(s, store, self.encoder,
                          Catalog.for_settings(store, self.encoder.version, self.encoder.dim,
                                               s.replace(popularity_half_life_s=math.inf)),
                          self.registry, Metrics())
        await trainer.start()
        self.trainers.append(trainer)
        return trainer

    def vector(self, item_id: str) -> np.ndarray:
        return self.catalog.index.vector(item_id)

    def adapter(self, version: str, seed: int, base: str | None = None,
                blend: Blend | None = None, extra: tuple[str, ...] = ()) -> Adapter:
        """A small sequence model trained a little on random successors of this world's
        items (and ``extra`` items, text from the encoder): a real version, not a good one."""
        ids = [*self.catalog.index.ids, *extra]
        text = np.vstack([self.catalog.index.matrix, self.encoder.encode(list(extra))]) \
            if extra else self.catalog.index.matrix.copy()
        rng = np.random.default_rng(seed)
        follows = rng.permutation(len(ids))
        seqs = [[int(i), int(follows[i])] for i in rng.integers(len(ids), size=200)]
        weights, _ = fit_sequence(None, windows_of(seqs, [[] for _ in seqs], 8), ids, text,
                                  self.s.replace(trainer_epochs=3.0).sequence_params(seed))
        return Adapter(version, base or self.encoder.version, weights, blend or Blend())


FOLLOWS = np.random.default_rng(7).permutation(N_ITEMS)  # who clicked i next clicks FOLLOWS[i]


def pairs(users: range, seed: int) -> list[dict]:
    """Each user clicks a random item, then the item that always follows it."""
    rng = np.random.default_rng(seed)
    events = []
    for u in users:
        i = int(rng.integers(N_ITEMS))
        ts = T0 + 10.0 * u
        events += [{"event_id": f"{u}-a", "user_id": f"u{u}", "type": "click",
                    "item_id": f"i{i}", "ts": ts},
                   {"event_id": f"{u}-b", "user_id": f"u{u}", "type": "click",
                    "item_id": f"i{FOLLOWS[i]}", "ts": ts + 1.0}]
    return events


def run(coro):
    return asyncio.run(coro)


def test_examples_hold_the_interests_before_the_choice_and_skips_as_negatives(redis_url):
    # the counts' own scores (lent to text neighbours as well otherwise: test_neighbours.py)
    s = _settings(redis_url, covisit_text_weight=0.0)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            activity = [
                {"event_id": "e1", "user_id": "u", "type": "click", "item_id": "i1", "ts": T0},
                {"event_id": "e2", "user_id": "u", "type": "click", "item_id": "i2",
                 "ts": T0 + 60},
            ]
            await trainer.observe(w.records(s.topic_activity, activity[:1]))
            feedback = [{"user_id": "u", "item_ids": ["i5", "i7"], "type": "skip", "ts": T0 + 30},
                        {"user_id": "u", "item_id": "i6", "type": "dislike", "ts": T0 + 31}]
            await trainer.observe(w.records(s.topic_feedback, feedback)
                                  + w.records(s.topic_activity, activity[1:]))
            # the same choice re-delivered: one example only
            await trainer.observe(w.records(s.topic_activity, activity[1:]))
            first, second = trainer.pending
            assert (first.positive, second.positive) == ("i1", "i2")
            assert len(first.interests) == 0  # nothing was known before the first click
            (interest,) = second.interests  # only what came before: i1, not i2
            np.testing.assert_allclose(interest, w.vector("i1"), atol=1e-2)
            assert second.ts == T0 + 60 and second.seen == frozenset({"i1"})
            assert (first.recent, second.recent) == ((), ("i1",))  # chosen before, not after
            assert set(second.negatives) == {"i5", "i6", "i7"} and first.negatives == ()
            # a click on a recommendation is a choice too; its activity event adds no twin
            await trainer.observe(w.records(s.topic_feedback, [
                {"user_id": "u", "item_id": "i3", "type": "click", "ts": T0 + 90}]))
            await trainer.observe(w.records(s.topic_activity, [
                {"event_id": "e3", "user_id": "u", "type": "click", "item_id": "i3",
                 "ts": T0 + 91}]))
            assert [e.positive for e in trainer.pending] == ["i1", "i2", "i3"]
            assert len(trainer.pending[2].interests) == 2  # i1 and i2, before i3
            assert trainer.pending[2].recent == ("i1", "i2")
            # each example holds the co-visit scores as a worker had them before the choice
            assert len(second.covisit) == 0  # only i1 had been chosen: nothing together yet
            # i1 then i2: each scores the other, i2 from i1, which is one choice back (the
            # co-visit recency's weight); each chosen once, plus the count prior
            once = 1 / (1 + s.covisit_count_prior)
            assert trainer.pending[2].covisit.as_dict() == pytest.approx(
                {"i1": once, "i2": s.covisit_recency * once}, rel=1e-5)  # faded by seconds

    run(go())


def test_bad_feedback_is_the_trainers_to_dead_letter_and_bad_activity_the_workers(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            records = w.records(s.topic_feedback, [
                {"user_id": "u", "item_id": "i1", "type": "click", "ts": T0},
                {"user_id": "u", "type": "click", "ts": T0},
                {"user_id": "u", "item_id": "nope", "type": "skip", "ts": T0},
                {"user_id": "u", "item_id": "i2", "type": "teleport", "ts": T0},
                # several items, one unknown: the known one is taken, the record kept too
                {"user_id": "v", "item_ids": ["i3", "gone"], "type": "click", "ts": T0}]) + \
                w.records(s.topic_activity, [{"event_id": "e", "user_id": "u", "type": "click",
                                              "item_id": "nope", "ts": T0}])
            out = await trainer.observe(records)
            assert [(r.record.topic, r.reason) for r in out.rejected] == [
                (s.topic_feedback, "missing_field"), (s.topic_feedback, "unknown_type"),
                (s.topic_feedback, "unknown_item"), (s.topic_feedback, "unknown_item"),
                (s.topic_activity, "unknown_item")]
            assert "unknown items ['gone'] (the other 1 were taken)" in out.rejected[3].error
            assert [r.reason for r in feedback_rejected(s, out)] == \
                ["missing_field", "unknown_type", "unknown_item", "unknown_item"]
            assert feedback_rejected(s.replace(worker_feedback=True), out) == []
            assert [e.positive for e in trainer.pending] == ["i1", "i3"]  # the good ones

    run(go())


def test_a_batch_retried_after_a_partial_write_or_a_failed_count_takes_each_example_once(
        redis_url):
    """Redis writes one user's state and refuses the other's (a pipeline is not atomic),
    then, on the retry, fails the co-visit count after the examples were taken: each
    choice still makes one example, its hard negative goes to it, and popularity and
    co-visits are counted once."""
    from redis.exceptions import OutOfMemoryError

    s = _settings(redis_url, covisit_count_prior=0.0)  # the counts alone

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            store = trainer.store
            cas, refuse = store._cas, store.r.register_script(
                "return redis.error_reply('OOM command not allowed (test)')")
            blocked = {store.keys.state("b")}

            def cas_or_refuse(keys, args, client):
                return (refuse if keys[0] in blocked else cas)(keys=keys, args=args,
                                                               client=client)
            store._cas = cas_or_refuse
            batch = w.records(s.topic_feedback, [
                {"user_id": "a", "item_id": "i9", "type": "skip", "ts": T0}]) + \
                w.records(s.topic_activity, [
                    {"event_id": f"{u}{n}", "user_id": u, "type": "click", "item_id": item,
                     "ts": T0 + n} for u, items in (("a", ["i1", "i2"]), ("b", ["i3", "i4"]))
                    for n, item in enumerate(items, 1)])
            with pytest.raises(OutOfMemoryError):
                await trainer.observe(batch)
            assert trainer.pending == []
            blocked.clear()
            count, fails = trainer.catalog.count_covisits, [OutOfMemoryError("OOM (test)")]

            async def count_once_failing(*args, **kwargs):
                if fails:
                    raise fails.pop()
                return await count(*args, **kwargs)
            trainer.catalog.count_covisits = count_once_failing
            with pytest.raises(OutOfMemoryError):
                await trainer.observe(batch)  # the examples were taken, then counting failed
            out = await trainer.observe(batch)
            assert sorted((e.user_id, e.positive) for e in trainer.pending) == [
                ("a", "i1"), ("a", "i2"), ("b", "i3"), ("b", "i4")]
            assert [e.negatives for e in trainer.pending if e.user_id == "a"] == [("i9",), ()]
            assert out.counts["examples"] == 4
            popularity = await store.popularity()
            assert {i: round(c) for i, (c, _) in popularity.items()} == \
                {"i1": 1, "i2": 1, "i3": 1, "i4": 1}
            cv = trainer.catalog.covisits
            np.testing.assert_allclose(cv.scores([["i1"], ["i3"]], ["i2", "i4"]),
                                       [[1.0, 0.0], [0.0, 1.0]], rtol=1e-6)
            again = await trainer.observe(batch)  # a redelivery adds nothing
            assert again.counts["examples"] == 4 and len(trainer.pending) == 4

    run(go())


def test_the_trainer_counts_popularity_once_when_one_shard_failed(redis_url):
    """The shared counts over three keys: one shard's popularity call fails after the
    examples were taken; the retry counts that shard's items alone, and takes no
    example twice."""
    from redis.exceptions import OutOfMemoryError

    s = _settings(redis_url, shared_key_shards=3)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            store = trainer.store
            items = [f"i{n}" for n in range(12)]
            assert {store.popularity_shard(i) for i in items} == {0, 1, 2}
            failing = store._popularity_keys(shard=2)[0]
            real, fails = store._popularity, [OutOfMemoryError("OOM (test)")]

            async def one_shard_fails(keys, args, client=None):
                if keys[1] == failing and fails:
                    raise fails.pop()
                return await real(keys=keys, args=args, client=client)
            store._popularity = one_shard_fails
            batch = w.records(s.topic_activity, [
                {"event_id": f"e{n}", "user_id": f"u{n % 3}", "type": "click", "item_id": item,
                 "ts": T0 + n} for n, item in enumerate(items)])
            with pytest.raises(OutOfMemoryError):
                await trainer.observe(batch)
            out = await trainer.observe(batch)
            assert out.counts["examples"] == 12 and len(trainer.pending) == 12
            counted = {i: round(c) for i, (c, _) in (await store.popularity()).items()}
            assert counted == {i: 1 for i in items}
            assert {i: round(c) for i, (c, _) in trainer.catalog.popularity.entries.items()} \
                == counted

    run(go())


def test_a_batch_observed_again_because_its_dead_letters_failed_to_send_adds_nothing(
        redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            await trainer.observe(w.records(s.topic_activity, [
                {"event_id": "e1", "user_id": "u", "type": "click", "item_id": "i1",
                 "ts": T0}]))
            batch = w.records(s.topic_feedback, [
                {"user_id": "u", "item_id": "i2", "type": "click", "ts": T0 + 60},
                {"user_id": "u", "item_id": "no-such-item", "type": "click", "ts": T0 + 61}])
            first = await trainer.observe(batch)
            again = await trainer.observe(batch)  # run_batches: the emit failed, retried
            assert [e.positive for e in trainer.pending] == ["i1", "i2"]
            assert [r.reason for r in again.rejected] == ["unknown_item"]
            assert again is first

    run(go())


def test_a_round_trains_promotes_and_workers_rank_with_the_new_version(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer(s.replace(trainer_batch_size=2000))
            events = pairs(range(1000), seed=1)
            for start in range(0, len(events), 256):
                await trainer.observe(w.records(s.topic_activity, events[start:start + 256]))
            assert trainer.due()
            announcement = await trainer.round()
            assert not trainer.pending and not trainer.due()
            version = announcement["version"]
            assert version == f"{w.encoder.version}+ft00001"
            assert announcement["promoted"] is True
            assert announcement["parent"] == w.encoder.version
            assert announcement["examples"]["train"] == 1600
            assert announcement["examples"]["heldout"] == 400
            window = announcement["window"]
            assert window["heldout_from_ts"] >= window["from_ts"]
            held = announcement["heldout"]
            assert held["candidate"]["ndcg@10"] > held["current"]["ndcg@10"] + 0.2
            assert await w.registry.current() == version
            assert (await w.registry.meta(version))["promoted"] is True

            # a worker follows: vectors for the new version, every event says which ranked it
            assert (await follow(w.catalog, w.registry))[0] == version
            assert await follow(w.catalog, w.registry) is None  # already there
            out = await w.processor.process_activity(w.records(s.topic_activity, [
                {"event_id": "x1", "user_id": "new", "type": "click", "item_id": "i3",
                 "ts": T0 + 1e6}]))
            ((_, rec),) = out.recommendations
            assert rec["model_version"] == version
            assert f"i{FOLLOWS[3]}" in [i["item_id"] for i in rec["items"][:3]]

    run(go())


def test_a_round_judges_with_the_prior_of_its_cutoff_whatever_is_observed_meanwhile(
        redis_url, monkeypatch):
    import stream_app.trainer as trainer_module

    s = _settings(redis_url)
    priors: list[dict[str, float]] = []
    table = trainer_module.ItemTable

    def recorded(ids, text, prior, *rest):
        priors.append(dict(zip(ids, prior.tolist())))
        return table(ids, text, prior, *rest)

    monkeypatch.setattr(trainer_module, "ItemTable", recorded)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer(s.replace(trainer_batch_size=2000))
            await trainer.observe(w.records(s.topic_activity, pairs(range(1000), seed=1)))
            cutoff = max(e.ts for e in trainer.pending)
            (want,) = trainer.catalog.popularity.prior(["i0"], cutoff).tolist()
            gate, current = asyncio.Event(), trainer.registry.current

            async def slow_current():
                await gate.wait()
                return await current()

            trainer.registry.current = slow_current
            task = asyncio.create_task(trainer.round())
            await asyncio.sleep(0)  # the round starts and waits on the registry
            # meanwhile the stream goes on: many later choices of one item
            await trainer.observe(w.records(s.topic_activity, [
                {"event_id": f"late{n}", "user_id": f"late{n}", "type": "click",
                 "item_id": "i0", "ts": cutoff + 60 + n} for n in range(50)]))
            gate.set()
            await task
            assert priors[0]["i0"] == pytest.approx(want)

    run(go())


def test_a_worse_candidate_is_not_promoted(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            good = await w.trainer(s.replace(trainer_batch_size=2000))
            await good.observe(w.records(s.topic_activity, pairs(range(1000), seed=1)))
            first = await good.round()
            assert first["promoted"]
            # a trainer whose learning rates wreck the model: its candidate must be refused
            wrecked = await w.trainer(s.replace(trainer_batch_size=2000, trainer_lr=50.0,
                                                trainer_epochs=3.0))
            assert wrecked.current.version == first["version"]  # starts from the promoted one
            await wrecked.observe(w.records(s.topic_activity, pairs(range(1000, 2000), 2)))
            second = await wrecked.round()
            assert second["promoted"] is False
            assert second["reason"] == "held-out NDCG@10 worse than the current version's"
            assert second["heldout"]["candidate"]["ndcg@10"] < \
                second["heldout"]["current"]["ndcg@10"]
            assert await w.registry.current() == first["version"]
            listed = {r["version"]: r for r in await w.registry.versions()}
            assert listed[second["version"]]["promoted"] is False  # kept, for the record
            assert listed[first["version"]]["current"] is True

    run(go())


def test_an_operators_promote_during_a_round_stands(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer(s.replace(trainer_batch_size=2000))
            chosen = await w.registry.next_version()
            await w.registry.save(w.adapter(chosen, 3), {"created_at": 1.0})
            numbering = w.registry.next_version

            async def operator_promotes_meanwhile() -> str:
                # the round has read which version is current; the operator acts now
                await w.registry.promote(chosen, reason="operator")
                return await numbering()

            w.registry.next_version = operator_promotes_meanwhile
            await trainer.observe(w.records(s.topic_activity, pairs(range(1000), seed=1)))
            first = await trainer.round()
            w.registry.next_version = numbering
            assert first["promoted"] is False  # it beat the encoder, but too late
            assert first["reason"] == f"superseded: {chosen} was made current during the round"
            assert outcome(first) == "superseded"
            assert await w.registry.current() == chosen
            assert (await w.registry.meta(first["version"]))["promoted"] is False
            assert await w.registry.history() == [chosen]
            # no stale write either way: the trainer's own promote needs what it read current
            assert not await w.registry.promote(first["version"], "late", replacing="enc-x")
            assert await w.registry.current() == chosen

            await trainer.observe(w.records(s.topic_activity, pairs(range(1000, 2000), 2)))
            second = await trainer.round()
            assert second["parent"] == chosen  # the next round trains from the operator's
            assert await w.registry.current() == (second["version"] if second["promoted"]
                                                  else chosen)

    run(go())


def test_promote_and_rollback_move_every_follower(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            base = w.encoder.version
            made = []
            for seed in range(2):
                version = await w.registry.next_version()
                await w.registry.save(w.adapter(version, seed), {"created_at": len(made)})
                made.append(version)
            assert await w.registry.current() == base  # saved is not promoted
            await w.registry.promote(made[0], reason="test")
            await w.registry.promote(made[1], reason="test")
            await follow(w.catalog, w.registry)
            assert w.catalog.adapter.version == made[1]
            assert await w.registry.rollback() == made[0]  # the one before
            await follow(w.catalog, w.registry)
            assert w.catalog.adapter.version == made[0]
            np.testing.assert_allclose(
                w.catalog.ranking.matrix,
                w.catalog.adapter.item_vectors(w.catalog.index.ids, w.catalog.index.matrix))
            assert await w.registry.rollback(base) == base  # back to the plain encoder
            await follow(w.catalog, w.registry)
            assert w.catalog.adapter.is_base and w.catalog.ranking is w.catalog.index
            assert await w.registry.history() == [made[0], made[1], made[0], base]
            with pytest.raises(LookupError):
                await w.registry.promote(f"{base}+ft99999", reason="test")
            foreign = w.adapter("other-model+ft1", 5, base="other-model")
            await w.registry.save(foreign, {"created_at": 3})
            await w.registry.promote(foreign.version, reason="test")
            with pytest.raises(ValueError, match="trained on other-model"):
                await follow(w.catalog, w.registry)
            assert w.catalog.adapter.is_base  # a worker keeps what it had

    run(go())


def test_versions_beyond_the_kept_number_are_pruned_but_never_the_current(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            versions = []
            for n in range(5):
                version = await w.registry.next_version()
                await w.registry.save(w.adapter(version, n), {"created_at": n})
                versions.append(version)
            await w.registry.promote(versions[0], reason="test")
            assert set(await w.registry.prune(2)) == set(versions[1:3])
            assert [r["version"] for r in await w.registry.versions()] == \
                [versions[0], *versions[3:]]
            assert (await w.registry.load(versions[0])).version == versions[0]

    run(go())


def test_catalog_changes_during_a_swap_land_in_the_new_vectors_too(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            # ID rows for i2 and for new-b, an item the catalog gets only during the swap
            adapter = w.adapter(f"{w.encoder.version}+ft1", 3, extra=("new-b",))
            assert {"i2", "new-b"} <= set(adapter.sequence.item_ids)
            swap = asyncio.create_task(w.catalog.use(adapter))
            await asyncio.sleep(0)  # the swap is computing its vectors in a thread now
            assert w.catalog._changes is not None
            fresh = w.encoder.encode(["a", "b", "c"])
            w.catalog.upsert([("new-a", fresh[0]), ("new-b", fresh[1]), ("i1", fresh[2])])
            w.catalog.remove(["i0", "new-a", "i5"])
            assert w.catalog.adapter.is_base  # still ranking with the old version
            await swap
            index, ranking = w.catalog.index, w.catalog.ranking
            assert w.catalog.adapter is adapter
            assert list(ranking.ids) == list(index.ids) and len(index) == N_ITEMS - 1
            np.testing.assert_allclose(ranking.matrix,
                                       adapter.item_vectors(index.ids, index.matrix), atol=1e-6)
            w.catalog.upsert([("later", fresh[0])])  # after the swap: kept in step directly
            assert list(ranking.ids) == list(index.ids)
            np.testing.assert_allclose(ranking.vector("later"),
                                       adapter.item_vectors(["later"], fresh[:1])[0], atol=1e-6)

    run(go())


def test_a_current_version_below_the_plain_encoder_does_not_stay_current(redis_url):
    """A bad current version is replaced: by a candidate whose fitted blend weighs its
    (wrecked) sequence model out, so it ranks no worse than the encoder, or, when no
    candidate is promoted over two windows, by a revert to the encoder (the rule itself:
    ``test_adapter``'s Standing tests)."""
    s = _settings(redis_url, trainer_revert_windows=2)

    async def go() -> None:
        async with World(s) as w:
            base = w.encoder.version
            # sure of successors no user follows, and deaf to the users' interests
            bad = w.adapter(f"{base}+ft00099", 11, blend=Blend(8.0, 0.0, 0.0, 0.0))
            await w.registry.save(bad, {"created_at": 0})
            await w.registry.promote(bad.version, reason="test: a bad version")
            # a trainer whose own candidates are wrecked too (learning rate 50)
            trainer = await w.trainer(s.replace(trainer_batch_size=400, trainer_lr=50.0,
                                                trainer_epochs=1.0))
            replaced_at = None
            for window in range(3):  # users who click the nearest item by text
                events = []
                for u in range(200 * window, 200 * (window + 1)):
                    i = u % N_ITEMS
                    sims = w.catalog.index.matrix @ w.vector(f"i{i}")
                    sims[i] = -np.inf
                    events += [{"event_id": f"{u}-a", "user_id": f"r{u}", "type": "click",
                                "item_id": f"i{i}", "ts": T0 + 10.0 * u},
                               {"event_id": f"{u}-b", "user_id": f"r{u}", "type": "click",
                                "item_id": w.catalog.index.ids[int(np.argmax(sims))],
                                "ts": T0 + 10.0 * u + 1}]
                await trainer.observe(w.records(s.topic_activity, events))
                announcement = await trainer.round()
                held = announcement["heldout"]
                if replaced_at is None:
                    assert held["current"]["ndcg@10"] < held["base"]["ndcg@10"]
                if announcement["promoted"]:
                    assert held["candidate"]["ndcg@10"] >= held["base"]["ndcg@10"]
                    assert announcement["training"]["blend"]["sequence"] == 0.0
                if announcement["promoted"] or announcement["reverted_to"]:
                    replaced_at = window if replaced_at is None else replaced_at
            assert replaced_at is not None and replaced_at <= 1
            assert await w.registry.current() != bad.version
            assert trainer.current.version != bad.version

    run(go())


def test_a_round_is_reproducible_in_a_training_process_of_fixed_threads(redis_url):
    """The same examples give the same version, weight for weight: one torch thread in
    the training process (threaded CPU sums are not reproducible)."""

    async def one_round() -> Adapter:
        s = _settings(redis_url, trainer_threads=1)
        async with World(s) as w:
            trainer = await w.trainer(s.replace(trainer_batch_size=2000))
            assert trainer._pool().submit(torch.get_num_threads).result() == 1
            await trainer.observe(w.records(s.topic_activity, pairs(range(1000), seed=1)))
            announcement = await trainer.round()
            return await w.registry.load(announcement["version"])

    first, second = run(one_round()), run(one_round())
    assert first.sequence.item_ids == second.sequence.item_ids
    assert set(first.sequence.arrays) == set(second.sequence.arrays)
    for name, array in first.sequence.arrays.items():
        assert np.array_equal(array, second.sequence.arrays[name]), name
    assert np.array_equal(first.sequence.id_rows, second.sequence.id_rows)
    assert first.blend == second.blend


def test_forget_removes_the_user_everywhere_and_a_later_event_starts_afresh(redis_url):
    """Worker state, seen items, the trainer's replica and its examples; keys expire
    after ``user_ttl_s`` meanwhile; no recommendation for the forget itself."""
    s = _settings(redis_url, user_ttl_s=3600.0)

    async def go() -> None:
        async with World(s) as w:
            trainer = await w.trainer()
            before = [{"event_id": f"f{n}", "user_id": "gone", "type": "click",
                       "item_id": f"i{n}", "ts": T0 + n} for n in range(3)]
            other = [{"event_id": "o1", "user_id": "stays", "type": "click", "item_id": "i1",
                      "ts": T0}]
            records = w.records(s.topic_activity, before + other)
            await w.processor.process_activity(records)
            await trainer.observe(records)
            await trainer.round()  # the user's examples now sit in the replay buffer
            await trainer.observe(w.records(s.topic_activity, [
                {"event_id": "f3", "user_id": "gone", "type": "click", "item_id": "i3",
                 "ts": T0 + 3}]))
            keys = [k async for k in w.client.scan_iter(match=f"{s.key_prefix}*{{u:gone}}*")]
            assert len(keys) == 5  # state and seen, worker's and trainer's; worker's history
            ttls = [await w.client.ttl(k) for k in keys]
            assert all(0 < t <= 3600 for t in ttls), ttls
            assert any(e.user_id == "gone" for e in trainer.buffer)
            assert any(e.user_id == "gone" for e in trainer.pending)

            forget = w.records(s.topic_activity, [
                {"event_id": "bye", "user_id": "gone", "type": "forget", "ts": T0 + 4}])
            out = await w.processor.process_activity(forget)
            await trainer.observe(forget)
            assert out.recommendations == [] and out.counts["forgotten"] == 1
            # left: in each scope, the state key with the latest event ids only, expiring
            left = [k async for k in w.client.scan_iter(match=f"{s.key_prefix}*{{u:gone}}*")]
            assert sorted(k.decode().rsplit(":", 1)[1] for k in left) == ["state", "state"]
            ttls = [await w.client.ttl(k) for k in left]
            assert all(0 < t <= s.forget_tombstone_s for t in ttls), ttls
            for store, ids in ((w.store, ("f0", "f1", "f2", "bye")),
                               (trainer.store, ("f0", "f1", "f2", "f3", "bye"))):
                record = (await store.read_users(["gone"]))["gone"]
                assert record.state == UserState(recent_ids=ids)
                assert record.seen == frozenset()
            assert not any(e.user_id == "gone" for e in [*trainer.buffer, *trainer.pending])
            assert any(e.user_id == "stays" for e in trainer.buffer)

            after = w.records(s.topic_activity, [
                {"event_id": "back", "user_id": "gone", "type": "click", "item_id": "i9",
                 "ts": T0 + 5}])
            (rec,) = (await w.processor.process_activity(after)).recommendations
            record = (await w.store.read_users(["gone"]))["gone"]
            assert record.state.n_events == 1 and record.seen == {"i9"}
            assert record.state.recent_item_ids() == ("i9",)

    run(go())


def test_forget_and_later_events_in_one_batch_keep_only_what_came_after(redis_url):
    s = _settings(redis_url)

    async def go() -> None:
        async with World(s) as w:
            events = [{"event_id": "a", "user_id": "u", "type": "click", "item_id": "i1",
                       "ts": T0},
                      {"event_id": "b", "user_id": "u", "type": "forget", "ts": T0 + 1},
                      {"event_id": "c", "user_id": "u", "type": "click", "item_id": "i2",
                       "ts": T0 + 2}]
            batch = w.records(s.topic_activity, events)
            out = await w.processor.process_activity(batch)
            assert [r[1]["event_id"] for r in out.recommendations] == ["a", "c"]
            # the list after the forget may hold i1 again: it is no longer "seen"
            record = (await w.store.read_users(["u"]))["u"]
            assert record.state.n_events == 1 and record.seen == {"i2"}
            again = await w.processor.process_activity(batch)  # a redelivery changes nothing
            assert (again.counts["applied"], again.counts["duplicates"]) == (0, 3)
            record = (await w.store.read_users(["u"]))["u"]
            assert record.state.n_events == 1 and record.seen == {"i2"}
            assert {i: round(c) for i, (c, _) in (await w.store.popularity()).items()} == \
                {"i1": 1, "i2": 1}

    run(go())
