"""The published schemas (docs/schemas/): generated from the contract, up to date, true to
the examples in docs/contract.md, to what the parsers accept and reject, and to what the
worker and the trainer really emit and answer."""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from stream_app import models_cli
from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import (ContractError, Record, dead_letter, parse_activity,
                                 parse_feedback, parse_item)
from stream_app.metrics import Metrics
from stream_app.pipeline import Processor
from stream_app.runtime import Runtime
from stream_app.schemas import (DEAD_LETTER_ERROR_CHARS, DEAD_LETTER_KEY_CHARS, generate,
                                openapi, topic_schemas, trainer_openapi)
from stream_app.store import Store, connect
from tests.fakes import FakeEncoder

ROOT = Path(__file__).parent.parent
SCHEMA_DIR = ROOT / "docs" / "schemas"
S = Settings()
SCHEMAS = topic_schemas(S)
T0 = 1_700_000_000.0  # the records' broker timestamp: every `ts` below is at or before it


def validator(topic: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[topic], format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(topic: str, value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<record>'}: {e.message}"
            for e in validator(topic).iter_errors(value)]


def component(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<name>`` of an OpenAPI document (its ``$ref``s
    resolved within the document)."""
    registry = Registry().with_resource(
        "urn:test:openapi", Resource.from_contents(document, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:test:openapi#/components/schemas/{name}"},
                                registry=registry)


def run(coro):
    return asyncio.run(coro)


# --- (1) the files are the generator's output ---------------------------------------------

def test_the_schema_files_are_the_generated_ones():
    files = generate()
    assert set(files) == {p.name for p in SCHEMA_DIR.iterdir()}, \
        "docs/schemas/ holds other files than stream_app.schemas.generate() writes"
    for name, text in files.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, (
            f"docs/schemas/{name} is out of date: run .venv/bin/python -c "
            "\"from stream_app.schemas import write; write()\"")


def test_every_topic_has_a_valid_schema():
    assert set(SCHEMAS) == set(S.topics())
    for topic, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)
        assert schema["x-stream-app"]["topic"] == topic
        assert (SCHEMA_DIR / f"{topic}.schema.json").exists()


# --- (2) the examples of docs/contract.md --------------------------------------------------

# Examples elide what is too long to show with "…": a value elided where the schema wants a
# form is replaced by one of that form (here only the dead letter's sha256 "9f2c…").
ELIDED = {"payload_sha256": "9f2c" + "0" * 60}


def _values(block: str) -> list[Any]:
    """Every JSON value of a fenced block: one per line, or one over several lines."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(block) and block[at].isspace():
            at += 1
        if at == len(block):
            return out
        value, at = decoder.raw_decode(block, at)
        out.append(value)


def contract_examples() -> dict[str, list[Any]]:
    """The JSON examples under each ``## `topic` `` heading of docs/contract.md: its fenced
    ```json blocks and its inline `{...}` code spans that are JSON objects."""
    sections = re.split(r"^## ", (ROOT / "docs" / "contract.md").read_text(), flags=re.M)
    out: dict[str, list[Any]] = {}
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        topic = re.fullmatch(r"`([a-z-]+)`", heading.strip())
        if not topic:
            continue  # "Delivery guarantees"
        examples = out.setdefault(topic.group(1), [])
        for block in re.findall(r"```json\n(.*?)```", body, flags=re.S):
            examples += _values(block)
        prose = re.sub(r"```.*?```", "", body, flags=re.S)
        for span in re.findall(r"`(\{[^`]*\})`", prose):
            examples.append(json.loads(span))
    return out


def test_every_example_in_the_contract_doc_fits_its_topic_schema():
    examples = contract_examples()
    assert set(examples) == set(SCHEMAS), "a topic without a heading, or a heading no topic"
    for topic, values in examples.items():
        assert values, f"no JSON example under `{topic}`"
        for value in values:
            value = {k: ELIDED.get(k, v) if isinstance(v, str) and v.endswith("…") else v
                     for k, v in value.items()}
            assert not errors(topic, value), (topic, value, errors(topic, value))
    # the inline forget example is found too
    assert {"event_id": "f-1", "user_id": "7", "type": "forget"} in examples["user-activity"]


# --- (3) the schemas accept what the parsers accept and reject what they reject ----------

LONG_ID = "x" * (S.max_id_chars + 1)


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# (topic, case, record, whether the parser and the schema take it)
CASES = [
    ("items", "title", {"item_id": "42", "title": "Orbit"}, True),
    ("items", "all fields", {"item_id": "42", "title": "Orbit", "text": "A pilot",
                             "tags": ["sci-fi"], "ts": T0, "producer_field": {"x": 1}}, True),
    ("items", "tags only", {"item_id": "42", "tags": ["sci-fi"]}, True),
    ("items", "text only, integer id", {"item_id": 42, "text": "A pilot"}, True),
    ("items", "longest id, most tags", {"item_id": "x" * S.max_id_chars,
                                        "tags": ["t" * S.max_tag_chars] * S.max_tags}, True),
    ("items", "deleted", {"item_id": "42", "deleted": True}, True),
    ("items", "deleted ignores the rest", {"item_id": "42", "deleted": True, "title": 5,
                                           "tags": "x"}, True),
    ("items", "not deleted", {"item_id": "42", "deleted": False, "title": "t"}, True),
    ("items", "null title beside text", {"item_id": "42", "title": None, "text": "t"}, True),
    ("items", "missing item_id", {"title": "Orbit"}, False),
    ("items", "blank item_id", {"item_id": "  ", "title": "Orbit"}, False),
    ("items", "boolean item_id", {"item_id": True, "title": "Orbit"}, False),
    ("items", "float item_id", {"item_id": 4.5, "title": "Orbit"}, False),
    ("items", "too long id", {"item_id": LONG_ID, "title": "Orbit"}, False),
    ("items", "nothing to embed", {"item_id": "42"}, False),
    ("items", "blank title only", {"item_id": "42", "title": " "}, False),
    ("items", "empty tags only", {"item_id": "42", "tags": []}, False),
    ("items", "tags null", {"item_id": "42", "title": "t", "tags": None}, False),
    ("items", "tags not a list", {"item_id": "42", "title": "t", "tags": "sci-fi"}, False),
    ("items", "tag not a string", {"item_id": "42", "tags": ["a", 1]}, False),
    ("items", "too many tags", {"item_id": "42", "tags": ["t"] * (S.max_tags + 1)}, False),
    ("items", "too long tag", {"item_id": "42", "tags": ["t" * (S.max_tag_chars + 1)]}, False),
    ("items", "title not a string", {"item_id": "42", "title": 5}, False),
    ("items", "too long text", {"item_id": "42", "text": "t" * (S.max_text_chars + 1)}, False),
    ("items", "deleted not a boolean", {"item_id": "42", "deleted": "yes"}, False),
    ("items", "deleted null", {"item_id": "42", "deleted": None, "title": "t"}, False),
    ("items", "negative ts", {"item_id": "42", "title": "t", "ts": -1}, False),
    ("user-activity", "click", {"event_id": "e1", "user_id": "7", "type": "click",
                                "item_id": "42", "ts": T0}, True),
    ("user-activity", "integer ids", {"event_id": 9, "user_id": 7, "type": "view",
                                      "item_id": 42}, True),
    ("user-activity", "rate", {"user_id": "7", "type": "rate", "item_id": "42",
                               "rating": S.rating_max}, True),
    ("user-activity", "lowest rating", {"user_id": "7", "type": "rate", "item_id": "42",
                                        "rating": S.rating_min}, True),
    ("user-activity", "text", {"user_id": "7", "type": "text", "text": "ghosts"}, True),
    ("user-activity", "review", {"user_id": "7", "type": "like", "item_id": "42",
                                 "text": "loved it"}, True),
    ("user-activity", "blank item_id beside text", {"user_id": "7", "type": "search",
                                                    "item_id": "", "text": "ghosts"}, True),
    ("user-activity", "nulls for absent", {"event_id": None, "user_id": "7", "type": "click",
                                           "item_id": "42", "text": None, "rating": None,
                                           "ts": None}, True),
    ("user-activity", "forget", {"event_id": "f-1", "user_id": "7", "type": "forget"}, True),
    ("user-activity", "longest text, deepest nesting",
     {"user_id": "7", "type": "text", "text": "t" * S.max_text_chars,
      "extra": nested(S.max_json_depth - 1)}, True),
    ("user-activity", "missing user_id", {"type": "click", "item_id": "42"}, False),
    ("user-activity", "null user_id", {"user_id": None, "type": "click", "item_id": "42"},
     False),
    ("user-activity", "list user_id", {"user_id": ["7"], "type": "click", "item_id": "42"},
     False),
    ("user-activity", "missing type", {"user_id": "7", "item_id": "42"}, False),
    ("user-activity", "unknown type", {"user_id": "7", "type": "teleport", "item_id": "42"},
     False),
    ("user-activity", "neither item_id nor text", {"user_id": "7", "type": "click"}, False),
    ("user-activity", "blank text only", {"user_id": "7", "type": "text", "text": "  "}, False),
    ("user-activity", "text not a string", {"user_id": "7", "type": "text", "text": 5}, False),
    ("user-activity", "rate without rating", {"user_id": "7", "type": "rate",
                                              "item_id": "42"}, False),
    ("user-activity", "rate with null rating", {"user_id": "7", "type": "rate",
                                                "item_id": "42", "rating": None}, False),
    ("user-activity", "rating above range", {"user_id": "7", "type": "rate", "item_id": "42",
                                             "rating": S.rating_max + 1}, False),
    ("user-activity", "rating below range", {"user_id": "7", "type": "rate", "item_id": "42",
                                             "rating": S.rating_min - 1}, False),
    ("user-activity", "rating a string", {"user_id": "7", "type": "rate", "item_id": "42",
                                          "rating": "5"}, False),
    ("user-activity", "rating a boolean", {"user_id": "7", "type": "rate", "item_id": "42",
                                           "rating": True}, False),
    ("user-activity", "too long user_id", {"user_id": LONG_ID, "type": "click",
                                           "item_id": "42"}, False),
    ("user-activity", "too long event_id", {"event_id": LONG_ID, "user_id": "7",
                                            "type": "click", "item_id": "42"}, False),
    ("user-activity", "too long integer id", {"user_id": 10 ** S.max_id_chars,
                                              "type": "click", "item_id": "42"}, False),
    ("user-activity", "too long item_id on forget", {"user_id": "7", "type": "forget",
                                                     "item_id": LONG_ID}, False),
    ("user-activity", "too long text", {"user_id": "7", "type": "text",
                                        "text": "t" * (S.max_text_chars + 1)}, False),
    ("user-activity", "negative ts", {"user_id": "7", "type": "click", "item_id": "42",
                                      "ts": -1.0}, False),
    ("user-activity", "ts a string", {"user_id": "7", "type": "click", "item_id": "42",
                                      "ts": "1"}, False),
    ("user-activity", "ts overflowing a float", {"user_id": "7", "type": "click",
                                                 "item_id": "42", "ts": 10 ** 400}, False),
    ("user-activity", "nested too deep", {"user_id": "7", "type": "click", "item_id": "42",
                                          "extra": nested(S.max_json_depth)}, False),
    ("feedback", "click", {"user_id": "7", "item_id": "42", "type": "click",
                           "recommendation_id": "34bb2a22-fec5-5d49-9c8b-40071bd5d69d",
                           "ts": T0}, True),
    ("feedback", "rate", {"user_id": "7", "item_id": "42", "type": "rate", "rating": 4.0},
     True),
    ("feedback", "integer ids", {"user_id": 7, "item_id": 42, "type": "skip"}, True),
    ("feedback", "several items", {"user_id": "7", "item_ids": ["42", 43], "type": "skip"},
     True),
    ("feedback", "item_id and item_ids", {"user_id": "7", "item_id": "41", "item_ids": ["42"],
                                          "type": "skip"}, False),
    ("feedback", "null item_ids beside item_id", {"user_id": "7", "item_id": "42",
                                                  "item_ids": None, "type": "skip"}, True),
    ("feedback", "null item_id beside item_ids", {"user_id": "7", "item_id": None,
                                                  "item_ids": ["42"], "type": "skip"}, True),
    ("feedback", "blank item_id beside item_ids", {"user_id": "7", "item_id": "",
                                                   "item_ids": ["42"], "type": "skip"}, False),
    ("feedback", "both null", {"user_id": "7", "item_id": None, "item_ids": None,
                               "type": "skip"}, False),
    ("feedback", "no item_ids", {"user_id": "7", "item_ids": [], "type": "skip"}, False),
    ("feedback", "item_ids not a list", {"user_id": "7", "item_ids": "42", "type": "skip"},
     False),
    ("feedback", "a blank item in item_ids", {"user_id": "7", "item_ids": ["42", " "],
                                              "type": "skip"}, False),
    ("feedback", "too many item_ids", {"user_id": "7", "type": "skip",
                                       "item_ids": [str(n) for n in
                                                    range(S.max_feedback_items + 1)]}, False),
    ("feedback", "missing user_id", {"item_id": "42", "type": "click"}, False),
    ("feedback", "missing item_id", {"user_id": "7", "type": "click"}, False),
    ("feedback", "blank item_id", {"user_id": "7", "item_id": "", "type": "click"}, False),
    ("feedback", "an activity type only", {"user_id": "7", "item_id": "42", "type": "view"},
     False),
    ("feedback", "forget is not feedback", {"user_id": "7", "item_id": "42",
                                            "type": "forget"}, False),
    ("feedback", "rate without rating", {"user_id": "7", "item_id": "42", "type": "rate"},
     False),
    ("feedback", "rating out of range", {"user_id": "7", "item_id": "42", "type": "rate",
                                         "rating": 1e300}, False),
    ("feedback", "too long recommendation_id", {"user_id": "7", "item_id": "42",
                                                "type": "click",
                                                "recommendation_id": LONG_ID}, False),
    ("feedback", "negative ts", {"user_id": "7", "item_id": "42", "type": "click",
                                 "ts": -5}, False),
]
PARSERS = {"items": parse_item, "user-activity": parse_activity, "feedback": parse_feedback}


def parser_accepts(topic: str, value: Any, timestamp: float = T0) -> bool:
    record = Record(topic, 0, 0, timestamp, b"k", json.dumps(value).encode())
    try:
        PARSERS[topic](record, S.limits())
    except ContractError:
        return False
    return True


@pytest.mark.parametrize("topic,case,value,accepted", CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_the_schema_accepts_what_the_parser_accepts(topic, case, value, accepted):
    assert parser_accepts(topic, value) is accepted, "the case is mislabelled"
    assert (not errors(topic, value)) is accepted, errors(topic, value) or "schema accepts it"


@pytest.mark.parametrize("topic", sorted(PARSERS))
def test_records_that_are_not_objects_are_rejected_by_both(topic):
    for value in ([1, 2], "text", 7, None):
        assert not parser_accepts(topic, value)
        assert errors(topic, value)


def test_what_a_schema_cannot_say_is_named_in_it():
    """The parser also rejects these; JSON Schema sees neither the broker timestamp, the
    record's bytes, nor ``7.0`` apart from ``7``. The schema says so in words and in
    ``x-stream-app``, and accepts them."""
    activity = SCHEMAS["user-activity"]
    future = {"user_id": "7", "type": "click", "item_id": "42",
              "ts": T0 + S.max_future_skew_s + 1}
    assert not parser_accepts("user-activity", future) and not errors("user-activity", future)
    assert activity["x-stream-app"]["max_future_skew_s"] == S.max_future_skew_s
    assert "STREAM_APP_MAX_FUTURE_SKEW_S" in activity["properties"]["ts"]["description"]
    huge = {"user_id": "7", "type": "text", "text": "t", "pad": "x" * S.max_record_bytes}
    assert not parser_accepts("user-activity", huge) and not errors("user-activity", huge)
    assert activity["x-stream-app"]["max_record_bytes"] == S.max_record_bytes
    float_id = {"user_id": 7.0, "type": "click", "item_id": "42"}
    assert not parser_accepts("user-activity", float_id) and not errors("user-activity", float_id)


def test_a_dead_letter_keeps_at_most_what_its_schema_says():
    letter = dead_letter(Record("items", 0, 0, T0, b"k" * 5000, b"\xff" * 10),
                         "e" * 5000, "not_json", 4)
    assert len(letter["key"]) == DEAD_LETTER_KEY_CHARS
    assert len(letter["error"]) == DEAD_LETTER_ERROR_CHARS
    assert letter["payload_encoding"] == "base64" and letter["payload_truncated"]
    assert not errors(S.topic_dead_letters, letter)


# --- (4) what the worker and the trainer really emit and answer --------------------------

def records(topic: str, values: list[Any], key: str = "user_id") -> list[Record]:
    """Records as Kafka hands them over: a dict becomes JSON, bytes and None stay as they
    are (not JSON, a tombstone)."""
    out = []
    for offset, value in enumerate(values):
        raw = value if value is None or isinstance(value, bytes) else json.dumps(value).encode()
        k = str(value.get(key, "")).encode() if isinstance(value, dict) else None
        out.append(Record(topic, offset % 2, offset, T0, k, raw))
    return out


ITEMS = [{"item_id": f"i{n}", "title": f"item {n}", "tags": [f"g{n % 3}"], "ts": T0 - 1e5}
         for n in range(12)]
BAD_ITEMS = [{"item_id": "bad"}, {"title": "no id"}, b"\xff\xfe not text", None]
ACTIVITY = [
    {"event_id": "a1", "user_id": "u1", "type": "click", "item_id": "i1", "ts": T0 - 500},
    {"event_id": "a2", "user_id": "u1", "type": "rate", "item_id": "i2", "rating": 4.5,
     "ts": T0 - 400},
    {"event_id": "a3", "user_id": "u1", "type": "text", "text": "spaceships", "ts": T0 - 300},
    {"user_id": 2, "type": "view", "item_id": "i3"},  # default event id and ts
    {"event_id": "a5", "user_id": "u3", "type": "dislike", "item_id": "i4", "ts": T0 - 100},
    {"event_id": "f1", "user_id": "u3", "type": "forget"},  # no recommendation
]
BAD_ACTIVITY = [
    {"user_id": "u1", "type": "teleport", "item_id": "i1"},
    {"user_id": "u1", "type": "click", "item_id": "nope"},
    {"user_id": "u1", "type": "rate", "item_id": "i1", "rating": 1e300},
    {"user_id": "u1", "type": "click", "item_id": "i1", "ts": T0 + 10 * S.max_future_skew_s},
    {"type": "click", "item_id": "i1"},
    {"user_id": LONG_ID, "type": "click", "item_id": "i1"},
    {"user_id": "u1", "type": "click", "item_id": "i1", "extra": nested(S.max_json_depth)},
    {"user_id": "u1", "type": "text", "text": "é" * (S.max_record_bytes // 2)},  # too large
    b"{not json",
    "a string".encode(),
    None,
]
FEEDBACK = [{"user_id": "u1", "item_id": "i5", "type": "click", "ts": T0 - 50},
            {"user_id": "u1", "item_id": "i6", "type": "rate", "rating": 2, "ts": T0 - 40}]
BAD_FEEDBACK = [{"user_id": "u1", "item_id": "nope", "type": "click"},
                {"user_id": "u1", "item_id": "i5", "type": "view"},
                {"user_id": "u1", "item_id": "i5", "type": "rate"}]


@pytest.mark.integration
def test_what_the_worker_emits_fits_the_schemas(redis_url, prefix):
    """A Processor against the real Redis: every recommendation and every dead letter it
    produces validates; every record it took validates against its input schema."""
    settings = S.replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        store = Store(connect(redis_url), prefix)
        try:
            enc = FakeEncoder()
            proc = Processor(settings, store, enc,
                             Catalog(store, enc.version, enc.dim, 86400.0), Metrics())
            outs = [await proc.process_items(records(S.topic_items, ITEMS + BAD_ITEMS,
                                                     "item_id")),
                    await proc.process_activity(records(S.topic_activity,
                                                        ACTIVITY + BAD_ACTIVITY)),
                    await proc.process_feedback(records(S.topic_feedback,
                                                        FEEDBACK + BAD_FEEDBACK))]
            return outs
        finally:
            await store.r.aclose()

    items_out, activity_out, feedback_out = run(go())
    recommendations = [value for _, value in activity_out.recommendations]
    assert len(recommendations) == len(ACTIVITY) - 1  # none for forget
    for rec in recommendations:
        assert not errors(S.topic_recommendations, rec), (rec, errors(S.topic_recommendations,
                                                                      rec))
    assert any(rec["items"] for rec in recommendations)
    letters = [r.letter(S.dead_letter_payload_bytes)[1]
               for out in (items_out, activity_out, feedback_out) for r in out.rejected]
    assert len(letters) == len(BAD_ITEMS) + len(BAD_ACTIVITY) + len(BAD_FEEDBACK)
    for letter in letters:
        assert not errors(S.topic_dead_letters, letter), (letter, errors(S.topic_dead_letters,
                                                                         letter))
    reasons = {letter["reason"] for letter in letters}
    assert {"empty", "not_json", "unknown_type", "unknown_item", "out_of_range", "future_ts",
            "missing_field", "too_long", "too_deep", "too_large"} <= reasons
    assert any(letter.get("payload_encoding") == "base64" for letter in letters)
    assert any(letter["payload_truncated"] for letter in letters)
    # the records the worker took fit the input schemas (the future ts aside: see above)
    for topic, good in ((S.topic_items, ITEMS), (S.topic_activity, ACTIVITY),
                        (S.topic_feedback, FEEDBACK)):
        for value in good:
            assert not errors(topic, value), (topic, value)


@pytest.mark.integration
def test_what_the_worker_answers_over_http_fits_the_openapi_document(redis_url, prefix):
    """The bodies of /stats, /users/{id}/interests and /users/{id}/recommendations, from a
    started worker Runtime (the views in stream_app.web hand them over as they are)."""
    settings = S.replace(key_prefix=prefix, redis_url=redis_url, show_user_text=False)
    doc = openapi(settings)

    async def go():
        runtime = Runtime(settings, FakeEncoder())
        await runtime.ready()
        try:
            await runtime.processor.process_items(records(S.topic_items, ITEMS, "item_id"))
            await runtime.processor.process_activity(records(S.topic_activity, ACTIVITY))
            version, items = await runtime.recommend("u1", 5)
            return (await runtime.stats(), await runtime.interests("u1"),
                    {"user_id": "u1", "model_version": version,  # as stream_app.web does
                     "items": [{"item_id": i, "score": round(s, 6), "reason": r}
                               for i, s, r in items]},
                    await runtime.interests("nobody"), runtime.describe())
        finally:
            await runtime.redis.aclose()

    stats, interests, recommended, nobody, described = run(go())
    assert nobody is None  # the view answers 404
    for name, body in (("WorkerStats", stats), ("Interests", interests),
                       ("Recommendations", recommended)):
        found = [e.message for e in component(doc, name).iter_errors(body)]
        assert not found, (name, body, found)
    shaped = {str(i["shaped_by"]) for i in interests["interests"]}
    assert "text:" in shaped and any("item_id" in s for s in shaped)
    assert not list(component(doc, "Readiness").iter_errors(
        {"status": "ready", "reasons": [], "retrying": {}, "lag": 0, **described}))


TRAINER = dict(trainer_batch_size=100, trainer_max_wait_s=math.inf, trainer_epochs=2.0,
               trainer_step_size=32, sequence_dim=16, sequence_blocks=1, sequence_heads=1,
               sequence_dropout=0.0, recent_items=8)


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_what_the_trainer_announces_fits_the_schemas(redis_url, prefix, monkeypatch):
    """A real round's announcement, the trainer's /stats body, and the announcements of
    `stream-app model promote` and `rollback`."""
    from stream_app.trainer_app import TrainerRuntime

    settings = S.replace(key_prefix=prefix, redis_url=redis_url, **TRAINER)
    announced: list[dict[str, Any]] = []

    async def capture(s: Settings, announcement: dict[str, Any]) -> None:
        announced.append(announcement)

    monkeypatch.setattr(models_cli, "announce", capture)
    monkeypatch.setattr(models_cli, "base_version", lambda s: FakeEncoder.version)
    events = []
    for u in range(60):
        events += [{"event_id": f"{u}-{n}", "user_id": f"u{u}", "type": "click",
                    "item_id": f"i{(u + n) % len(ITEMS)}", "ts": T0 - 1000 + 10 * u + n}
                   for n in range(2)]

    async def go():
        store = Store(connect(redis_url), prefix)
        enc = FakeEncoder()
        await Processor(settings, store, enc, Catalog(store, enc.version, enc.dim, 86400.0),
                        Metrics()).process_items(records(S.topic_items, ITEMS, "item_id"))
        await store.r.aclose()
        runtime = TrainerRuntime(settings, enc)
        await runtime.ready()
        try:
            await runtime.observe(records(S.topic_activity, events))
            await runtime.observe(records(S.topic_feedback, FEEDBACK))
            announcement = await runtime.train_if_due()
            stats = runtime.stats()
        finally:
            runtime.trainer.close()
            await runtime.redis.aclose()
        for command in ("promote", "rollback"):
            await models_cli._run(settings, argparse.Namespace(
                model_command=command, version=announcement["version"]
                if command == "promote" else None))
        return announcement, stats

    announcement, stats = run(go())
    assert announcement is not None and announcement["type"] == "trained"
    for value in (announcement, json.loads(json.dumps(announcement)), *announced):
        assert not errors(S.topic_model_updates, value), (value, errors(
            S.topic_model_updates, value))
    assert [a["type"] for a in announced] == ["promoted", "rolled_back"]
    found = [e.message for e in component(trainer_openapi(settings), "TrainerStats")
             .iter_errors(stats)]
    assert stats["last_round"] is announcement and not found, found


# --- (5) the OpenAPI documents --------------------------------------------------------------

def _functions() -> dict[str, ast.FunctionDef]:
    """Every module-level function of the package, by name."""
    out = {}
    for path in (ROOT / "stream_app").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                out.setdefault(node.name, node)
    return out


def _routes(function: str, functions: dict[str, ast.FunctionDef] | None = None,
            seen: set[str] | None = None) -> set[str]:
    """The paths ``function`` registers with ``@app.page(...)``, following the
    ``register_*`` functions it calls, wherever they are defined."""
    functions = functions if functions is not None else _functions()
    seen = seen if seen is not None else {function}
    routes = set()
    for node in ast.walk(functions[function]):
        if isinstance(node, ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "page"):
                    routes.add(ast.literal_eval(deco.args[0]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id.startswith("register_") and node.func.id not in seen):
            seen.add(node.func.id)
            routes |= _routes(node.func.id, functions, seen)
    return routes


WEB = ROOT / "stream_app" / "web.py"
DOCUMENTS = [("openapi.json", openapi, "register_views"),
             ("openapi-trainer.json", trainer_openapi, "create_trainer_app")]


def test_the_walk_finds_every_page_of_the_web_module():
    """The AST walk finds at least what a plain grep of stream_app/web.py finds (and the
    pages of the modules whose ``register_*`` it calls)."""
    grepped = set(re.findall(r'@app\.page\("([^"]+)"\)', WEB.read_text()))
    assert grepped and grepped <= _routes("register_views")


@pytest.mark.parametrize("name,build,source", DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_openapi_paths_are_the_registered_routes(name, build, source):
    routes = _routes(source)
    # the web console's page and its static files (/ui, /ui/, /ui/{name}) are no API
    routes = {r for r in routes if r != "/ui" and not r.startswith("/ui/")}
    assert set(build()["paths"]) == routes, f"{name}: update stream_app.schemas"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name,build,source", DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_openapi_document_is_well_formed(name, build, source):
    """What can be checked without a validator: version, operations, responses, path
    parameters, resolvable references, schemas valid JSON Schema 2020-12."""
    doc = build()
    assert doc["openapi"].startswith("3.1.") and doc["info"]["title"] and doc["info"]["version"]
    assert doc["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    op_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/") and set(item) == {"get"}  # faust pages answer GET
        op = item["get"]
        op_ids.append(op["operationId"])
        assert op["responses"] and all(re.fullmatch(r"[1-5]\d\d", c) for c in op["responses"])
        assert "200" in op["responses"]
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path
        for p in op.get("parameters", []):
            assert p["in"] in ("path", "query") and (p["in"] != "path" or p["required"])
        public = path in ("/healthz", "/readyz", "/metrics")
        assert (op.get("security") == []) is public, path
        assert ("401" in op["responses"]) is (not public), path
    assert len(set(op_ids)) == len(op_ids)
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]  # a KeyError: a dangling reference
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name,build,source", DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_openapi_document_passes_the_openapi_31_validator(name, build, source):
    validators = pytest.importorskip(
        "openapi_spec_validator", reason="openapi-spec-validator is not installed (the "
        "structural checks above still run)")
    validators.validate(json.loads((SCHEMA_DIR / name).read_text()))
    validators.OpenAPIV31SpecValidator(build()).validate()
