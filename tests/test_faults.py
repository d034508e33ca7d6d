"""Infrastructure faults are waited out and retried, never dead-lettered (issue 12).

A worker against a redis-server of its own that is not there yet when it starts, or
that refuses writes at its memory limit; a worker whose broker is not there yet.
"""

from __future__ import annotations

import time

import pytest

from stream_app.embedded import EmbeddedBroker, RedisServer, free_port
from tests.conftest import make_settings
from tests.harness import Harness, delete_keys, http, running, wait_catalog

pytestmark = pytest.mark.integration

TS = 1_760_000_000.0


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise TimeoutError(what)


def _events(prefix: str, n: int, items: list[str]) -> list[dict]:
    return [{"event_id": f"{prefix}-{i}", "user_id": f"{prefix}-u{i % 7}", "type": "click",
             "item_id": items[i % len(items)], "ts": TS + i} for i in range(n)]


def _metric(worker, name: str) -> float:
    status, text = http(worker, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_a_worker_waits_for_redis_instead_of_crashing(kafka_bootstrap, sample_catalog,
                                                      tmp_path):
    port = free_port()
    settings = make_settings(kafka_bootstrap, f"redis://127.0.0.1:{port}/0", "wait-redis")
    server = RedisServer(port)
    try:
        with running(settings.replace(retry_max_s=1.0), tmp_path) as h:
            worker = h.start_worker()
            # "waiting for starting" may come first, on a loaded machine
            status, body = _wait(lambda: (lambda r: r if r[0] == 503 and r[1]["reasons"]
                                          and "starting" not in r[1]["reasons"][0]
                                          else None)(_try_http(worker, "/readyz")),
                                 90, "readyz never said what it waits for")
            assert "waiting for redis_connection" in body["reasons"][0]
            assert http(worker, "/healthz")[0] == 200  # alive: do not restart it
            time.sleep(3)
            assert worker.proc.poll() is None  # still running, not crash-looping
            server.start()
            worker.wait_healthy(90)
            h.produce(settings.topic_items, sample_catalog[:20], key_field="item_id")
            wait_catalog([worker], 20)
            events = _events("w", 10, [i["item_id"] for i in sample_catalog[:20]])
            h.produce(settings.topic_activity, events)
            recs = h.recommendations_for({e["event_id"] for e in events}, timeout=60)
            assert {r["event_id"] for r in recs} == {e["event_id"] for e in events}
            assert _metric(worker, "stream_app_retries_total") >= 1
    finally:
        server.stop()


def _try_http(worker, path):
    try:
        return http(worker, path)
    except OSError:
        return (0, {})


def test_redis_out_of_memory_retries_the_batch_and_dead_letters_nothing(
        kafka_bootstrap, sample_catalog, tmp_path):
    server = RedisServer().start()
    settings = make_settings(kafka_bootstrap, server.url, "oom").replace(
        retry_max_s=0.5, ready_retry_s=2.0)
    r = server.client()
    try:
        with running(settings, tmp_path) as h:
            worker = h.start_worker()
            worker.wait_healthy(120)
            items = [i["item_id"] for i in sample_catalog[:20]]
            h.produce(settings.topic_items, sample_catalog[:20], key_field="item_id")
            wait_catalog([worker], 20)
            before = _events("before", 20, items)
            h.produce(settings.topic_activity, before)
            h.recommendations_for({e["event_id"] for e in before}, timeout=60)

            r.config_set("maxmemory", max(int(r.info("memory")["used_memory"]) - 1024, 1))
            during = _events("oom", 40, items)
            h.produce(settings.topic_activity, during)
            status, body = _wait(lambda: (lambda res: res if res[0] == 503 else None)(
                http(worker, "/readyz")), 60, "never reported the stuck batch")
            assert any("redis_oom" in reason for reason in body["reasons"]), body
            assert "redis_oom" in http(worker, "/metrics")[1]

            r.config_set("maxmemory", 0)
            recs = h.recommendations_for({e["event_id"] for e in during}, timeout=90)
            assert {x["event_id"] for x in recs} == {e["event_id"] for e in during}
            _wait(lambda: http(worker, "/readyz")[0] == 200, 30, "not ready again")
            # counters are published just after a batch's outputs were confirmed
            applied = _wait(lambda: (lambda st: st["worker"].get("applied") == 60 and st)(
                http(worker, "/stats")[1]), 30, "applied never reached 60")
            assert applied["worker"].get("dead_letters", 0) == 0
            assert applied["worker"]["applied"] == len(before) + len(during)
    finally:
        r.close()
        server.stop()


def test_a_worker_waits_for_the_broker_instead_of_crashing(redis_url, sample_catalog,
                                                           tmp_path):
    broker = EmbeddedBroker()  # its port, not yet listening
    settings = make_settings(broker.bootstrap, redis_url, "wait-kafka").replace(
        retry_max_s=1.0)
    h = None
    try:
        h = Harness(settings, tmp_path)
        worker = h.start_worker()
        status, body = _wait(lambda: (lambda r: r if r[0] == 503 else None)(
            _try_http(worker, "/readyz")), 90, "readyz never answered")
        assert "waiting for kafka" in body["reasons"][0]
        assert http(worker, "/healthz")[0] == 200
        time.sleep(2)
        assert worker.proc.poll() is None
        broker.start()
        h.ensure_topics()
        worker.wait_healthy(120)
        h.produce(settings.topic_items, sample_catalog[:10], key_field="item_id")
        wait_catalog([worker], 10)
        events = _events("k", 5, [i["item_id"] for i in sample_catalog[:10]])
        h.produce(settings.topic_activity, events)
        recs = h.recommendations_for({e["event_id"] for e in events}, timeout=60)
        assert {r["event_id"] for r in recs} == {e["event_id"] for e in events}
    except BaseException:
        if h is not None:
            print(h.worker_logs())
        raise
    finally:
        if h is not None:
            h.stop_all()
            delete_keys(settings)
        broker.stop()
