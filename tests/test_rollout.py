"""Live rollout through a real broker: a worker swaps versions mid-stream without losing,
doubling or reordering events; the trainer process trains, announces, and the
operator's promote and rollback reach the worker."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest

from stream_app.embedded import free_port
from stream_app.kafka_io import Producer
from stream_app.loading import load_catalog
from stream_app.model.adapter import Adapter
from stream_app.model.sequence import fit_sequence, windows_of
from stream_app.processes import WorkerProcess
from stream_app.store import Store, connect
from stream_app.versions import Registry
from tests.conftest import make_settings
from tests.harness import http, running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, redis_url, sample_catalog, tmp_path_factory):
    settings = make_settings(kafka_bootstrap, redis_url, "rollout").replace(
        model_poll_interval_s=0.2, trainer_batch_size=150, trainer_max_wait_s=3.0)
    with running(settings, tmp_path_factory.mktemp("rollout")) as h:
        worker = h.start_worker()
        worker.wait_healthy(180)
        asyncio.run(load_catalog(settings, kafka_bootstrap, sample_catalog, timeout=120,
                                 progress=False))
        yield h


def _version(worker: WorkerProcess) -> str:
    return http(worker, "/readyz")[1]["model_version"]


def _wait_for_version(worker: WorkerProcess, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _version(worker) != version:
        assert time.monotonic() < deadline, f"worker still on {_version(worker)}"
        time.sleep(0.1)


def _wait_idle(trainer: WorkerProcess, timeout: float = 120.0) -> None:
    """Until the trainer holds no pending examples and runs no round."""
    deadline = time.monotonic() + timeout
    while True:
        stats = http(trainer, "/stats")[1]
        if not stats["pending_examples"] and not stats["training"]:
            return
        assert time.monotonic() < deadline, f"trainer still busy: {stats}"
        time.sleep(0.2)


def test_a_promotion_mid_stream_loses_and_doubles_nothing(stack, sample_catalog):
    s = stack.settings
    worker = stack.workers[0]
    base = _version(worker)
    ids = [i["item_id"] for i in sample_catalog]
    rng = np.random.default_rng(5)
    events = [{"event_id": f"live-{n}", "user_id": f"live-u{n % 25}", "type": "click",
               "item_id": ids[int(rng.integers(len(ids)))], "ts": 1_700_000_000.0 + n}
              for n in range(600)]

    async def stream_and_promote() -> str:
        client = connect(s.redis_url)
        registry = Registry(client, s.key_prefix, base)
        version = await registry.next_version()
        # a real (small) sequence model over the catalog's text vectors: it ranks by each
        # user's recent items, so the swap changes what every later event gets
        store = Store(client, s.key_prefix)
        known, vectors = await store.load_catalog(base)
        assert sorted(known) == sorted(ids)
        order = rng.permutation(len(known))
        seqs = [[int(i), int(order[i])] for i in rng.integers(len(known), size=300)]
        params = dataclasses.replace(s.sequence_params(), length=8, dim=16, blocks=1, heads=1,
                                     epochs=2.0, batch_size=32)
        weights, _ = fit_sequence(None, windows_of(seqs, [[] for _ in seqs], 8), known,
                                  np.asarray(vectors, np.float32), params)
        await registry.save(Adapter(version, base, weights),
                            {"created_at": time.time()})
        async with Producer(s.kafka_bootstrap_servers) as producer:
            for n, event in enumerate(events):
                await producer.send(s.topic_activity, event, event["user_id"])
                if n % 20 == 19:
                    await producer.flush()
                    await asyncio.sleep(0.05)  # a steady flow of ~400 events/s
                if n == 300:
                    await registry.promote(version, reason="test")
        await client.aclose()
        return version

    version = asyncio.run(stream_and_promote())
    recs = stack.recommendations_for({e["event_id"] for e in events}, timeout=120)
    assert sorted(r["event_id"] for r in recs) == sorted(e["event_id"] for e in events)
    assert {r["model_version"] for r in recs} == {base, version}  # the swap happened mid-stream
    by_user = defaultdict(list)
    for r in recs:
        by_user[r["user_id"]].append(r)
    for user_recs in by_user.values():
        order = [int(r["event_id"].split("-")[1]) for r in user_recs]
        assert order == sorted(order)  # each user's events still in order
        versions = [r["model_version"] for r in user_recs]
        assert versions == sorted(versions, key=lambda v: v == version)  # never back
    assert _version(worker) == version
    status, stats = http(worker, "/stats")
    assert stats["model_version"] == version and stats["base_model_version"] == base
    metrics = http(worker, "/metrics")[1]
    assert f'stream_app_model_info{{version="{version}"}} 1.0' in metrics
    assert 'stream_app_model_swaps_total{outcome="ok"}' in metrics


def _model_cli(s, *args: str) -> subprocess.CompletedProcess:
    env = {**s.env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "stream_app", "model", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_trainer_process_trains_announces_and_operators_promote_and_roll_back(
        stack, sample_catalog, tmp_path):
    s = stack.settings
    worker = stack.workers[0]
    base = http(worker, "/stats")[1]["base_model_version"]
    http_port = free_port()
    with open(tmp_path / "trainer.log", "wb") as log:
        trainer = WorkerProcess(s.replace(web_port=http_port), stdout=log,
                                command="trainer").start()
        try:
            trainer.wait_healthy(180)
            ids = [i["item_id"] for i in sample_catalog]
            follows = np.random.default_rng(9).permutation(len(ids))
            rng = np.random.default_rng(10)
            activity, feedback = [], []
            for u in range(200):
                i = int(rng.integers(len(ids)))
                t = 1_750_000_000.0 + 10 * u
                activity += [{"event_id": f"tr-{u}-a", "user_id": f"tr-u{u}", "type": "click",
                              "item_id": ids[i], "ts": t}]
                feedback += [{"user_id": f"tr-u{u}", "type": "click",
                              "item_id": ids[follows[i]], "ts": t + 1},
                             {"user_id": f"tr-u{u}", "type": "skip",
                              "item_id": ids[follows[i] - 1], "ts": t + 1}]
            stack.produce(s.topic_activity, activity)
            # two bad feedback records: the trainer dead-letters them (the workers read none)
            stack.produce(s.topic_feedback, feedback + [
                {"user_id": "tr-bad", "type": "click", "ts": 1_750_000_000.0},
                {"user_id": "tr-bad", "type": "click", "item_id": "no-such-item",
                 "ts": 1_750_000_000.0}])
            def ours(vs: list) -> list:  # rounds that trained on this test's events
                return [v for v in vs if v["type"] == "trained"
                        and v["window"]["to_ts"] >= 1_750_000_000.0]

            announcement = ours(stack.collect(s.topic_model_updates, lambda vs: bool(ours(vs)),
                                              timeout=180))[0]
            version = announcement["version"]
            assert version.startswith(base + "+ft")
            assert announcement["examples"]["train"] + announcement["examples"]["heldout"] >= 150
            assert announcement["parent"].startswith(base)
            assert {"candidate", "current"} <= set(announcement["heldout"])
            assert announcement["training"]["steps"] > 0
            status, stats = http(trainer, "/stats")
            assert status == 200 and stats["lag_s"] >= 0 and stats["counts"]["records"] >= 602
            letters = stack.collect(s.topic_dead_letters, lambda vs: len(vs) >= 2, timeout=60)
            metrics = http(trainer, "/metrics")[1]
            assert "stream_app_trainer_rounds_total" in metrics
            assert sorted((d["source_topic"], d["reason"]) for d in letters) == \
                [(s.topic_feedback, "missing_field"), (s.topic_feedback, "unknown_item")]
            assert ('stream_app_dead_letters_total{reason="unknown_item",'
                    f'topic="{s.topic_feedback}"}} 1.0') in metrics

            listed = _model_cli(s, "list")
            assert listed.returncode == 0 and version in listed.stdout, listed.stderr
            _wait_idle(trainer)  # a round that started later would train from the operator's
            promoted = _model_cli(s, "promote", version)
            assert promoted.returncode == 0, promoted.stderr
            _wait_for_version(worker, version)
            rolled = _model_cli(s, "rollback", base)
            assert rolled.returncode == 0, rolled.stderr
            assert json.loads(rolled.stdout)["version"] == base
            _wait_for_version(worker, base)
            assert _model_cli(s, "promote", "no-such-version").returncode == 2
            updates = stack.collect(s.topic_model_updates,
                                    lambda vs: {"promoted", "rolled_back"} <=
                                    {v["type"] for v in vs}, timeout=60)
            assert [v["version"] for v in updates if v["type"] == "promoted"] == [version]
            assert [v["version"] for v in updates if v["type"] == "rolled_back"] == [base]
        except BaseException:
            print((tmp_path / "trainer.log").read_text(errors="replace")[-4000:])
            raise
        finally:
            trainer.stop()
