"""stream_app.client: validation by the workers' own parsing (unit), and the client
against a real broker and a real worker (integration), including its example script."""

from __future__ import annotations

import ast
import asyncio
import datetime
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stream_app import contract
from stream_app.client import (Client, ClientError, ContractError, HTTPError, Recommendation,
                               prepare_activity, prepare_feedback, prepare_item)
from stream_app.config import Settings
from stream_app.connections import KafkaConfig
from stream_app.embedded import free_port
from tests.conftest import make_settings
from tests.harness import http, running

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_760_000_000.0
LIMITS = Settings().limits()
NOWHERE = f"127.0.0.1:{free_port()}"  # no broker: a send that got that far would fail


def _worker_error(parse, event: dict, topic: str) -> ContractError:
    """What a worker says about ``event`` when it arrives with broker timestamp NOW."""
    record = contract.Record(topic, 0, 0, NOW, None, json.dumps(event).encode())
    with pytest.raises(ContractError) as info:
        parse(record, LIMITS)
    return info.value


# --- unit: validation ----------------------------------------------------------------


def test_a_good_activity_event_is_sent_as_exactly_this_json_keyed_by_user():
    out = prepare_activity({"event_id": "e-1", "user_id": "7", "type": "rate",
                            "item_id": "42", "rating": 4.5, "ts": 964982800.0}, now=NOW)
    assert out.value == (b'{"event_id":"e-1","user_id":"7","type":"rate","item_id":"42",'
                         b'"rating":4.5,"ts":964982800.0}')
    assert (out.topic, out.key, out.timestamp) == ("user-activity", "7", NOW)
    assert json.loads(out.value) == out.event
    parsed = contract.parse_activity(contract.Record("user-activity", 0, 0, NOW, None,
                                                     out.value), LIMITS)
    assert (parsed.event_id, parsed.user_id, parsed.rating, parsed.ts) == (
        "e-1", "7", 4.5, 964982800.0)


def test_event_id_and_ts_are_added_when_missing():
    out = prepare_activity({"user_id": 7, "type": "text", "text": "ghost stories"}, now=NOW)
    event_id = out.event["event_id"]
    assert uuid.UUID(event_id).version == 4
    assert out.value == ('{"event_id":"%s","user_id":7,"type":"text","text":"ghost stories",'
                         '"ts":1760000000.0}' % event_id).encode()
    assert out.key == "7"  # a numeric id is its decimal string, as the worker reads it
    again = prepare_activity({"user_id": 7, "type": "text", "text": "ghost stories"}, now=NOW)
    assert again.event["event_id"] != event_id
    # null counts as missing; a given one is kept where it is
    assert prepare_activity({"user_id": "7", "type": "forget", "event_id": None,
                             "ts": None}, now=NOW).event["ts"] == NOW
    assert list(prepare_activity({"user_id": "7", "event_id": "x", "type": "forget"},
                                 now=NOW).event) == ["user_id", "event_id", "type", "ts"]


def test_good_items_and_feedback_are_sent_as_given():
    item = prepare_item({"item_id": "42", "title": "Orbit of Quiet Stars",
                         "tags": ["sci-fi", "space"]}, now=NOW)
    assert item.value == (b'{"item_id":"42","title":"Orbit of Quiet Stars",'
                          b'"tags":["sci-fi","space"]}')  # no ts: the record timestamp
    assert (item.topic, item.key) == ("items", "42")
    gone = prepare_item({"item_id": "42", "deleted": True}, now=NOW)
    assert gone.value == b'{"item_id":"42","deleted":true}'
    fb = prepare_feedback({"user_id": "7", "item_id": "17", "type": "rate", "rating": 4.0},
                          now=NOW)
    assert fb.value == (b'{"user_id":"7","item_id":"17","type":"rate","rating":4.0,'
                        b'"ts":1760000000.0}')
    assert "event_id" not in fb.event and (fb.topic, fb.key) == ("feedback", "7")
    passed = prepare_feedback({"user_id": 7, "item_ids": ["17", "18"], "type": "skip"},
                              now=NOW)
    assert passed.value == b'{"user_id":7,"item_ids":["17","18"],"type":"skip","ts":1760000000.0}'
    assert passed.key == "7"
    text = prepare_activity({"event_id": "u", "user_id": "7", "type": "text",
                             "text": "Ça plaît 🎬", "ts": 1.0}, now=NOW)
    assert text.value == ('{"event_id":"u","user_id":"7","type":"text","text":"Ça plaît 🎬",'
                          '"ts":1.0}').encode()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value  # ``depth`` lists deep: inside an object, one level too deep


BAD_ACTIVITY = [
    ({"type": "click", "item_id": "42"}, "missing_field"),
    ({"user_id": "7", "type": "teleport", "item_id": "42"}, "unknown_type"),
    ({"user_id": "7", "type": "click"}, "missing_field"),
    ({"user_id": "7", "type": "rate", "item_id": "42"}, "missing_field"),
    ({"user_id": "7", "type": "rate", "item_id": "42", "rating": 11}, "out_of_range"),
    ({"user_id": "7", "type": "rate", "item_id": "42", "rating": "five"}, "invalid_field"),
    ({"user_id": "7", "type": "click", "item_id": ["42"]}, "invalid_field"),
    ({"user_id": "7", "type": "text", "text": "x" * (LIMITS.max_text_chars + 1)}, "too_long"),
    ({"user_id": "u" * (LIMITS.max_id_chars + 1), "type": "click", "item_id": "1"}, "too_long"),
    ({"user_id": "7", "type": "click", "item_id": "42", "ts": NOW * 1000}, "future_ts"),
    ({"user_id": "7", "type": "click", "item_id": "42", "ts": -1}, "out_of_range"),
    ({"user_id": "7", "type": "click", "item_id": "42", "ts": float("nan")}, "out_of_range"),
    ({"user_id": "7", "type": "click", "item_id": "42", "x": _nested(LIMITS.max_json_depth)},
     "too_deep"),
]


@pytest.mark.parametrize("event,reason", BAD_ACTIVITY,
                         ids=[f"{n}-{r}" for n, (_, r) in enumerate(BAD_ACTIVITY)])
def test_a_bad_activity_event_raises_the_workers_own_error(event, reason):
    with pytest.raises(ContractError) as info:
        prepare_activity(event, now=NOW)
    assert info.value.reason == reason
    sent = {"event_id": "e", **event} if "ts" in event else {"event_id": "e", **event,
                                                             "ts": NOW}
    worker = _worker_error(contract.parse_activity, sent, "user-activity")
    assert (info.value.reason, str(info.value)) == (worker.reason, str(worker))


@pytest.mark.parametrize("item,reason", [
    ({"title": "no id"}, "missing_field"),
    ({"item_id": "1"}, "missing_field"),
    ({"item_id": "1", "title": "t", "tags": "sci-fi"}, "invalid_field"),
    ({"item_id": "1", "title": "t", "tags": ["t"] * (LIMITS.max_tags + 1)}, "too_long"),
    ({"item_id": "1", "deleted": "yes"}, "invalid_field"),
])
def test_a_bad_item_raises_the_workers_own_error(item, reason):
    with pytest.raises(ContractError) as info:
        prepare_item(item, now=NOW)
    worker = _worker_error(contract.parse_item, item, "items")
    assert info.value.reason == worker.reason == reason
    assert str(info.value) == str(worker)


@pytest.mark.parametrize("event,reason", [
    ({"user_id": "7", "item_id": "42", "type": "view"}, "unknown_type"),
    ({"user_id": "7", "type": "click"}, "missing_field"),
    ({"user_id": "7", "item_id": "42", "type": "rate"}, "missing_field"),
    ({"user_id": "7", "item_id": "42", "type": "rate", "rating": -11}, "out_of_range"),
    ({"user_id": "7", "item_id": "42", "type": "click", "recommendation_id": 1.5},
     "invalid_field"),
])
def test_bad_feedback_raises_the_workers_own_error(event, reason):
    with pytest.raises(ContractError) as info:
        prepare_feedback(event, now=NOW)
    worker = _worker_error(contract.parse_feedback, {**event, "ts": NOW}, "feedback")
    assert info.value.reason == worker.reason == reason
    assert str(info.value) == str(worker)


def test_what_json_cannot_hold_or_a_non_object_is_refused():
    with pytest.raises(ContractError) as info:
        prepare_activity({"user_id": "7", "type": "click", "item_id": "1",
                          "when": datetime.datetime.now()})
    assert info.value.reason == "invalid_field"
    with pytest.raises(ContractError) as info:
        prepare_item(["42"])  # type: ignore[arg-type]
    assert info.value.reason == "not_json"


def test_the_deployments_limits_are_the_ones_enforced():
    settings = Settings().replace(max_text_chars=10, rating_max=5.0)
    client = Client.from_settings(settings)
    assert client.limits == settings.limits()
    event = {"user_id": "7", "type": "text", "text": "x" * 11}
    prepare_activity(event)  # fine under the defaults
    with pytest.raises(ContractError) as info:
        prepare_activity(event, client.limits)
    assert info.value.reason == "too_long"


def test_a_bad_event_raises_at_the_call_before_anything_is_sent():
    async def go():
        async with Client(NOWHERE) as client:
            with pytest.raises(ContractError) as info:
                await client.send_activity("7", "rate", "42", rating=42)
            assert info.value.reason == "out_of_range"
            with pytest.raises(ContractError) as info:
                await client.send_item("42")
            assert info.value.reason == "missing_field"
            with pytest.raises(ContractError) as info:
                await client.send_feedback("7", "42", "rate")
            assert info.value.reason == "missing_field"
            with pytest.raises(ContractError) as info:  # the whole batch is refused
                await client.send_activity_batch([
                    {"user_id": "7", "type": "click", "item_id": "1"},
                    {"user_id": "7", "type": "click", "item_id": "2"},
                    {"user_id": "7", "type": "sneeze", "item_id": "3"}])
            assert info.value.reason == "unknown_type" and info.value.index == 2
            assert str(info.value) == "event 2: unknown type 'sneeze'"
            assert client._producer is None  # never connected: nothing was sent
            with pytest.raises(ClientError, match="cannot reach Kafka at 127.0.0.1:"):
                await client.send_activity("7", "click", "42")  # good: it tries

    asyncio.run(go())


def test_construction_from_settings_and_env():
    s = Settings().replace(topic_activity="act", topic_items="it", topic_feedback="fb",
                           topic_recommendations="recs", api_token="s3cret",
                           kafka_bootstrap_servers="k:9092")
    client = Client.from_settings(s, worker_url="http://w:6066/")
    assert (client.topic_activity, client.topic_items, client.topic_feedback,
            client.topic_recommendations) == ("act", "it", "fb", "recs")
    assert client.worker_url == "http://w:6066" and client.api_token == "s3cret"
    assert client.kafka == s.kafka() and "s3cret" not in repr(client)
    env = Client.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:1", "WORKER_URL": "http://x:1",
                           "STREAM_APP_TOPIC_ACTIVITY": "a2"})
    assert (env.kafka.bootstrap, env.worker_url, env.topic_activity, env.api_token) == (
        "b:1", "http://x:1", "a2", None)
    plain = Client("h:1")
    assert plain.kafka == KafkaConfig("h:1") and plain.topic_activity == "user-activity"
    assert plain.limits == Settings().limits()


def test_http_errors_without_a_worker():
    async def go():
        async with Client(NOWHERE) as client:
            with pytest.raises(ClientError, match="no worker_url"):
                await client.recommend("7")
        async with Client(NOWHERE, worker_url=f"http://{NOWHERE}") as client:
            with pytest.raises(ClientError, match="cannot reach the worker") as info:
                await client.recommend("7")
            assert not isinstance(info.value, HTTPError)

    asyncio.run(go())


def test_a_recommendation_record_reads_as_the_dataclass():
    raw = {"recommendation_id": "34bb", "user_id": "7", "event_id": "e-1001",
           "event_ts": 964982703.0,
           "items": [{"item_id": "42", "score": 1.31, "reason": "interest 1 of 2"},
                     {"item_id": "99", "score": 0.95, "reason": "trending"}],
           "model_version": "v1", "emitted_at": 1764300000.0}
    rec = Recommendation.from_dict(raw)
    assert rec.item_ids == ["42", "99"] and rec.items[1].reason == "trending"
    assert (rec.user_id, rec.event_id, rec.event_ts, rec.model_version) == (
        "7", "e-1001", 964982703.0, "v1")
    assert rec.raw == raw


# --- integration: a real broker and worker ---------------------------------------------


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap, redis_url, tmp_path_factory):
    settings = make_settings(kafka_bootstrap, redis_url, "client").replace(
        api_token="cl13nt-t0ken", worker_feedback=True)  # counts the client's feedback
    with running(settings, tmp_path_factory.mktemp("client")) as h:
        worker = h.start_worker()
        worker.wait_healthy(180)
        yield h, worker


async def _until(what, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last: {value!r}"
        await asyncio.sleep(0.2)


def _metric(worker, topic: str, outcome: str) -> float:
    _, text = http(worker, "/metrics")
    found = re.search(r'^stream_app_records_total\{[^}]*outcome="%s"[^}]*topic="%s"[^}]*\} '
                      r'(\S+)$' % (outcome, re.escape(topic)), text, re.M) or re.search(
        r'^stream_app_records_total\{[^}]*topic="%s"[^}]*outcome="%s"[^}]*\} (\S+)$'
        % (re.escape(topic), outcome), text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
def test_the_client_against_a_worker(deployment, sample_catalog):
    h, worker = deployment
    s = h.settings
    catalog = sample_catalog[:12]
    sci = [i["item_id"] for i in catalog if i["tags"][0] == "sci-fi"] or [catalog[0]["item_id"]]

    async def go():
        async with Client.from_settings(s, worker_url=worker.url) as client:
            sent_items = await client.send_item_batch(catalog)
            assert [i["item_id"] for i in sent_items] == [i["item_id"] for i in catalog]
            await _until(client.stats, lambda st: st["catalog_items"] >= len(catalog))

            async with client.recommendations(["cu-1", "cu-2"]) as stream:
                one = await client.send_activity("cu-1", "click", sci[0])
                two, other = await client.send_activity_batch([
                    {"user_id": "cu-2", "type": "text", "text": "haunted house ghosts"},
                    {"user_id": "cu-other", "type": "search", "text": "westerns"}])
                late = await client.send_activity("cu-1", "rate", catalog[1]["item_id"],
                                                  rating=4.5, event_id="cu-1-rate")
                wanted = {one["event_id"], two["event_id"], "cu-1-rate"}
                got: dict[str, Recommendation] = {}

                async def collect():
                    async for rec in stream:
                        assert rec.user_id in ("cu-1", "cu-2"), rec  # cu-other left out
                        got[rec.event_id] = rec
                        if wanted <= set(got):
                            return

                await asyncio.wait_for(collect(), 60)
            assert stream._consumer is None and not client._streams  # closed on exit
            rec = got[one["event_id"]]
            assert rec.recommendation_id == contract.recommendation_id("cu-1", one["event_id"])
            assert len(rec.items) == s.top_k and sci[0] not in rec.item_ids
            assert got[late["event_id"]].event_ts == late["ts"]
            assert other["event_id"] not in got

            # from the beginning: the same records again, filtered to one user
            again = []
            async for r in client.recommendations("cu-2", from_beginning=True,
                                                  idle_timeout=2.0):
                again.append(r)
            assert [r.event_id for r in again] == [two["event_id"]]

            ranking = await client.recommend("cu-1", k=5)
            assert ranking.user_id == "cu-1" and len(ranking.items) == 5
            assert sci[0] not in ranking.item_ids and ranking.model_version == rec.model_version
            with pytest.raises(HTTPError) as info:
                await client.recommend("cu-1", k=0)
            assert info.value.status == 400 and "k must be in" in str(info.value)

            before = _metric(worker, s.topic_feedback, "ok")
            await client.send_feedback("cu-1", rec.items[0].item_id, "click",
                                       recommendation_id=rec.recommendation_id)
            skipped = await client.send_feedback("cu-1", rec.item_ids[1:3], "skip",
                                                 recommendation_id=rec.recommendation_id)
            assert skipped["item_ids"] == rec.item_ids[1:3] and "item_id" not in skipped
            await _until(lambda: asyncio.sleep(0, _metric(worker, s.topic_feedback, "ok")),
                         lambda n: n >= before + 2)

            assert (await client.interests("cu-1"))["events_applied"] == 2
            await client.forget("cu-1")

            async def interests_status():
                try:
                    await client.interests("cu-1")
                    return 200
                except HTTPError as err:
                    return err.status

            await _until(interests_status, lambda st: st == 404)

        for token in ("wrong", ""):
            async with Client.from_settings(s, worker_url=worker.url,
                                            api_token=token) as intruder:
                with pytest.raises(HTTPError) as info:
                    await intruder.recommend("cu-2")
                assert info.value.status == 401 and "bearer token" in str(info.value)
        assert _metric(worker, s.topic_activity, "dead_letter") == 0
        assert _metric(worker, s.topic_feedback, "dead_letter") == 0

    asyncio.run(go())


@pytest.mark.integration
def test_the_example_script_end_to_end(deployment):
    h, worker = deployment
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_APP_")}
    env.update(h.settings.env(), WORKER_URL=worker.url, PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "client_example.py")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "refused before sending: out_of_range: rating 99 outside [-10, 10]" in out
    assert re.search(r"^recommendation [0-9a-f-]{36} ", out, re.M), out
    assert "fresh ranking over HTTP" in out and "sent forget" in out
    assert "cl13nt-t0ken" not in out
    assert _metric(worker, h.settings.topic_activity, "dead_letter") == 0


def test_the_docs_name_what_the_client_has_and_their_example_compiles():
    text = (ROOT / "docs" / "client.md").read_text()
    named = set(re.findall(r"^\| `(?:Client\.)?([a-z_]+)\(", text, re.M))
    assert {"send_activity", "send_activity_batch", "forget", "send_item", "send_item_batch",
            "delete_item", "send_feedback", "send_feedback_batch", "recommend", "interests",
            "stats", "from_settings", "from_env"} <= named
    for name in named:
        assert callable(getattr(Client, name)), name
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        compile(block, "docs/client.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert "(docs/client.md)" in (ROOT / "README.md").read_text()
