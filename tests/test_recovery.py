"""Two workers in one group; one is killed mid-stream (SIGKILL) and restarted.

Checks the effectively-once claim exactly: every user's state in Redis equals the
pure fold of exactly the events sent (none lost, none applied twice), and every
event got a recommendation.
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from stream_app.contract import ActivityEvent
from stream_app.loading import load_catalog
from stream_app.model.interest import UserState, apply_event, event_weight
from stream_app.store import Store, connect
from tests.conftest import make_settings
from tests.harness import Harness, http, running

pytestmark = pytest.mark.integration


def _events(item_ids: list[str], users: int, per_user: int) -> list[dict]:
    rng = random.Random(7)
    kinds = ["view", "click", "like", "purchase", "dislike", "skip", "rate"]
    out = []
    for n in range(per_user):
        for u in range(users):
            kind = rng.choice(kinds)
            ev = {"event_id": f"r-{u}-{n}", "user_id": f"ru-{u}", "type": kind,
                  "item_id": rng.choice(item_ids), "ts": 1_750_000_000.0 + n * 3600 + u}
            if kind == "rate":
                ev["rating"] = rng.choice([1.0, 2.5, 4.0, 5.0])
            out.append(ev)
    return out


def _expected(settings, events: list[dict], vectors: dict[str, np.ndarray]) -> dict[str, UserState]:
    weights = settings.event_weights()
    params = settings.interest_params()
    states: dict[str, UserState] = {}
    for e in events:
        ev = ActivityEvent(event_id=e["event_id"], user_id=e["user_id"], type=e["type"],
                           ts=e["ts"], partition=0, offset=0, item_id=e["item_id"],
                           rating=e.get("rating"))
        state = states.get(ev.user_id, UserState())
        states[ev.user_id] = apply_event(state, ev, vectors[ev.item_id],
                                         event_weight(ev, weights, settings.rating_neutral),
                                         ev.item_id, params)
    return states


def test_worker_killed_mid_stream_loses_nothing_and_double_counts_nothing(
        kafka_bootstrap, redis_url, sample_catalog, tmp_path):
    settings = make_settings(kafka_bootstrap, redis_url, "recovery")
    with running(settings, tmp_path) as h:
        a, b = h.start_worker(), h.start_worker()
        a.wait_healthy(180)
        b.wait_healthy(180)
        assert asyncio.run(load_catalog(settings, kafka_bootstrap, sample_catalog, timeout=120,
                                        progress=False)) == len(sample_catalog)

        # every worker sees an item added anywhere, quickly
        started = time.monotonic()
        h.produce(settings.topic_items, [{"item_id": "late-1", "title": "Late Arrival",
                                          "text": "A comedy about a very late train."}],
                  key_field="item_id")
        while not all(http(w, "/stats")[1]["catalog_items"] == len(sample_catalog) + 1
                      for w in (a, b)):
            assert time.monotonic() - started < 15, "catalog change not seen by every worker"
            time.sleep(0.05)
        print(f"catalog change visible on both workers after {time.monotonic() - started:.2f}s")

        events = _events([i["item_id"] for i in sample_catalog], users=40, per_user=12)
        first, rest = events[:240], events[240:]
        h.produce(settings.topic_activity, first)
        h.collect(settings.topic_recommendations, lambda vs: len(vs) >= 20)
        a.kill()  # mid-stream: uncommitted offsets, possibly a half-done batch
        h.produce(settings.topic_activity, rest)
        h.start_worker().wait_healthy(180)
        recs = h.recommendations_for({e["event_id"] for e in events}, timeout=180)
        assert {r["event_id"] for r in recs} == {e["event_id"] for e in events}

        async def read():
            store = Store(connect(redis_url), settings.key_prefix)
            try:
                users = sorted({e["user_id"] for e in events})
                vecs = await store.item_vectors(recs[0]["model_version"],
                                                sorted({e["item_id"] for e in events}))
                return await store.read_users(users), vecs, await store.stats()
            finally:
                await store.r.aclose()

        actual, vectors, _ = asyncio.run(read())
        expected = _expected(settings, events, vectors)
        for user, want in expected.items():
            got = actual[user].state
            assert got.n_events == want.n_events == 12, user
            assert got.last_ts == want.last_ts
            assert [i.source for i in got.interests] == [i.source for i in want.interests]
            for g, w in zip(got.interests, want.interests):
                # stored as float16 scaled by the largest component (store.py, format 2):
                # each of the user's 12 writes rounds every component to within 2^-12 of
                # that largest one; the pure fold never rounds
                np.testing.assert_allclose(g.vector, w.vector, rtol=1e-4,
                                           atol=12 * 2.0 ** -12 * float(np.abs(w.vector).max()))
                # item vectors are renormalised on the way in (rel); a negative event weakens
                # an interest by its cosine with the stored (float16) vector, about 1e-5 off
                # per event (abs: 12 events, with margin)
                assert (g.long, g.short, g.ts) == pytest.approx((w.long, w.short, w.ts),
                                                                rel=1e-4, abs=1e-3)
        # Counters are published after each batch's send: read them once the workers stopped.
        h.stop_all()
        _, _, stats = asyncio.run(read())
        print(f"replayed duplicates skipped after the kill: {stats.get('duplicates', 0)}")

        # A full replay: a new consumer group re-reads the whole topic from offset 0.
        replayer = Harness(settings.replace(app_id=settings.app_id + "-replay"), tmp_path)
        h.workers.append(replayer.start_worker())
        h.workers[-1].wait_healthy(180)
        h.collect(settings.topic_recommendations, lambda vs: len(vs) >= 2 * len(events))
        deadline = time.monotonic() + 30  # counters are published just after the send
        while True:
            again, _, stats_after = asyncio.run(read())
            replayed = stats_after["duplicates"] - stats.get("duplicates", 0)
            if replayed >= len(events) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for user, want in expected.items():
            assert again[user].state.n_events == want.n_events
            before, after = actual[user].state.interests, again[user].state.interests
            assert len(before) == len(after)
            assert all(np.array_equal(a.vector, b.vector) and (a.long, a.short) == (b.long, b.short)
                       for a, b in zip(before, after))
        assert replayed == len(events)
