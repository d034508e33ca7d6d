"""The event contract: parsing, every rejection reason, and the records the app emits."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace

import pytest

from stream_app.contract import (ACTIVITY_TYPES, FEEDBACK_TYPES, ActivityEvent, ContractError,
                                 FeedbackEvent, ItemEvent, Limits, Record, dead_letter, dumps,
                                 parse_activity, parse_feedback, parse_item, recommendation,
                                 recommendation_id)

MAX_CHARS = 50
MAX_BYTES = 1000
REC_TS = 1700000000.5
LIMITS = Limits(max_bytes=MAX_BYTES, max_text_chars=MAX_CHARS, max_id_chars=40, max_tags=5,
                max_tag_chars=20, rating_min=-10.0, rating_max=10.0, max_json_depth=8,
                max_future_skew_s=3600.0, max_feedback_items=4)


def rec(value, topic="user-activity", partition=2, offset=17, key=b"k") -> Record:
    if isinstance(value, (dict, list)):
        value = json.dumps(value).encode("utf-8")
    elif isinstance(value, str):
        value = value.encode("utf-8")
    return Record(topic=topic, partition=partition, offset=offset, timestamp=REC_TS, key=key,
                  value=value)


def activity(obj, **kw) -> ActivityEvent:
    return parse_activity(rec(obj, **kw), LIMITS)


def item(obj, **kw) -> ItemEvent:
    return parse_item(rec(obj, topic="items", **kw), LIMITS)


def feedback(obj, **kw) -> FeedbackEvent:
    """The one event of a record naming one item."""
    (event,) = parse_feedback(rec(obj, topic="feedback", **kw), LIMITS)
    return event


def rejects(fn, obj, fragment: str) -> str:
    with pytest.raises(ContractError) as info:
        fn(obj)
    assert fragment in str(info.value), str(info.value)
    return str(info.value)


# --- activity: valid ---------------------------------------------------------------

def test_activity_full():
    e = activity({"event_id": "e1", "user_id": "u1", "type": "rate", "item_id": "m1",
                  "rating": 4, "ts": 1700000100.0})
    assert e == ActivityEvent(event_id="e1", user_id="u1", type="rate", ts=1700000100.0,
                              partition=2, offset=17, item_id="m1", text=None, rating=4.0,
                              topic="user-activity")
    assert isinstance(e.rating, float)


def test_activity_event_id_derived_from_position_when_missing():
    e = activity({"user_id": "u1", "type": "click", "item_id": "m1"}, partition=5, offset=99)
    assert e.event_id == "user-activity/5/99"
    assert (e.partition, e.offset) == (5, 99)
    # an empty event_id counts as missing
    assert activity({"event_id": " ", "user_id": "u1", "type": "view", "item_id": "m1"},
                    partition=0, offset=3).event_id == "user-activity/0/3"


def test_activity_ts_falls_back_to_record_timestamp():
    e = activity({"user_id": "u1", "type": "click", "item_id": "m1"})
    assert e.ts == REC_TS
    e = activity({"user_id": "u1", "type": "click", "item_id": "m1", "ts": 0})
    assert e.ts == 0.0


def test_activity_integer_ids_become_strings():
    e = activity({"user_id": 7, "type": "like", "item_id": 42, "event_id": 1})
    assert (e.user_id, e.item_id, e.event_id) == ("7", "42", "1")


def test_activity_text_event():
    e = activity({"user_id": "u", "type": "text", "text": "I like sci-fi", "ts": 5})
    assert e.text == "I like sci-fi" and e.item_id is None and e.rating is None
    # whitespace-only text is no text
    rejects(activity, {"user_id": "u", "type": "text", "text": "   "}, "needs item_id or text")


def test_every_activity_type_accepted():
    for kind in sorted(ACTIVITY_TYPES):
        obj = {"user_id": "u", "type": kind, "item_id": "m1"}
        if kind == "rate":
            obj["rating"] = 3.5
        assert activity(obj).type == kind


def test_activity_text_at_the_limit_is_accepted():
    assert activity({"user_id": "u", "type": "search", "text": "x" * MAX_CHARS}).text == \
        "x" * MAX_CHARS


# --- activity: rejections -----------------------------------------------------------

def test_reject_not_json():
    rejects(activity, b"{not json", "not JSON")
    rejects(activity, b"", "not JSON")


def test_reject_non_utf8_bytes():
    rejects(activity, b'{"user_id": "\xff\xfe", "type": "click"}', "not JSON")


def test_reject_json_array_and_scalars():
    assert rejects(activity, [{"user_id": "u"}], "not a JSON object") == \
        "not a JSON object: list"
    rejects(activity, b'"a string"', "not a JSON object: str")
    rejects(activity, b"42", "not a JSON object: int")
    rejects(activity, b"null", "not a JSON object: NoneType")


def test_reject_tombstone():
    assert rejects(activity, None, "tombstone") == "empty record (tombstone)"


def test_reject_oversize_record():
    obj = {"user_id": "u", "type": "click", "item_id": "m", "pad": "x" * MAX_BYTES}
    size = len(json.dumps(obj).encode())
    assert rejects(activity, obj, "too large") == \
        f"record too large: {size} bytes > {MAX_BYTES}"
    # exactly at the limit is fine
    base = {"user_id": "u", "type": "click", "item_id": "m", "pad": ""}
    pad = MAX_BYTES - len(json.dumps(base).encode())
    assert activity(dict(base, pad="x" * pad)).item_id == "m"


def test_reject_missing_or_empty_user_id():
    assert rejects(activity, {"type": "click", "item_id": "m"}, "user_id") == "missing user_id"
    assert rejects(activity, {"user_id": None, "type": "click", "item_id": "m"},
                   "user_id") == "missing user_id"
    assert rejects(activity, {"user_id": "  ", "type": "click", "item_id": "m"},
                   "user_id") == "empty user_id"


def test_reject_missing_or_unknown_type():
    assert rejects(activity, {"user_id": "u", "item_id": "m"}, "type") == "missing type"
    assert rejects(activity, {"user_id": "u", "type": "poke", "item_id": "m"},
                   "unknown type") == "unknown type 'poke'"
    rejects(activity, {"user_id": "u", "type": "CLICK", "item_id": "m"}, "unknown type")


def test_reject_no_item_id_and_no_text():
    assert rejects(activity, {"user_id": "u", "type": "click"}, "needs") == \
        "needs item_id or text"


def test_reject_text_too_long():
    assert rejects(activity, {"user_id": "u", "type": "text", "text": "x" * (MAX_CHARS + 1)},
                   "too long") == f"text too long: {MAX_CHARS + 1} chars > {MAX_CHARS}"


def test_reject_text_not_string():
    assert rejects(activity, {"user_id": "u", "type": "text", "text": 5}, "text") == \
        "text must be a string, got int"


def test_reject_rate_without_rating():
    assert rejects(activity, {"user_id": "u", "type": "rate", "item_id": "m"}, "rating") == \
        "type rate needs a rating"
    rejects(activity, {"user_id": "u", "type": "rate", "item_id": "m", "rating": None},
            "type rate needs a rating")


@pytest.mark.parametrize("raw,fragment", [
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":NaN}', "rating must be finite"),
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":Infinity}', "rating must be finite"),
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":-Infinity}', "rating must be finite"),
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":1e999}', "rating must be finite"),
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":"5"}',
     "rating must be a number, got str"),
    (b'{"user_id":"u","type":"rate","item_id":"m","rating":true}',
     "rating must be a number, got bool"),
    (b'{"user_id":"u","type":"click","item_id":"m","ts":NaN}', "ts must be finite"),
    (b'{"user_id":"u","type":"click","item_id":"m","ts":"2024-01-01"}',
     "ts must be a number, got str"),
])
def test_reject_bad_numbers(raw, fragment):
    assert rejects(activity, raw, fragment) == fragment


def test_reject_bool_where_string_expected():
    assert rejects(activity, {"user_id": True, "type": "click", "item_id": "m"}, "user_id") == \
        "user_id must be a string, got bool"
    assert rejects(activity, {"user_id": "u", "type": "click", "item_id": False},
                   "item_id") == "item_id must be a string, got bool"
    assert rejects(activity, {"user_id": "u", "type": "click", "item_id": 1.5},
                   "item_id") == "item_id must be a string, got float"
    assert rejects(activity, {"user_id": ["u"], "type": "click", "item_id": "m"},
                   "user_id") == "user_id must be a string, got list"


def test_reject_negative_ts():
    assert rejects(activity, {"user_id": "u", "type": "click", "item_id": "m", "ts": -1},
                   "ts") == "ts must be epoch seconds >= 0"


def test_huge_integer_rating_is_a_contract_error():
    """A JSON integer too large for a float must be rejected, not crash the batch.

    process_activity only catches ContractError; anything else takes the whole batch down.
    """
    raw = b'{"user_id":"u","type":"rate","item_id":"m","rating":1' + b"0" * 400 + b"}"
    rejects(activity, raw, "rating")


def test_huge_integer_ts_is_a_contract_error():
    raw = b'{"user_id":"u","type":"click","item_id":"m","ts":1' + b"0" * 400 + b"}"
    rejects(activity, raw, "ts")


def test_integer_beyond_python_digit_limit_is_a_contract_error():
    """json.loads raises a plain ValueError (not JSONDecodeError) for > 4300 digits."""
    raw = b'{"user_id":"u","type":"click","item_id":"m","x":1' + b"0" * 5000 + b"}"
    record = rec(raw)
    with pytest.raises(ContractError):
        parse_activity(record, replace(LIMITS, max_bytes=1_000_000))


# --- items -------------------------------------------------------------------------

def test_item_full():
    i = item({"item_id": "m1", "title": "Star", "text": "A ship.", "tags": ["sci-fi", "space"],
              "ts": 10})
    assert i == ItemEvent(item_id="m1", deleted=False, title="Star", text="A ship.",
                          tags=("sci-fi", "space"), ts=10.0)
    assert i.embed_text() == "Star. A ship.. sci-fi space"


def test_item_defaults_and_int_id():
    i = item({"item_id": 42, "title": "Only a title"})
    assert i == ItemEvent(item_id="42", deleted=False, title="Only a title", text="", tags=(),
                          ts=REC_TS)
    assert item({"item_id": "m", "tags": ["drama"]}).tags == ("drama",)
    assert item({"item_id": "m", "text": "words"}).text == "words"


def test_item_deleted():
    i = item({"item_id": "m9", "deleted": True, "ts": 3})
    assert i == ItemEvent(item_id="m9", deleted=True, ts=3.0)
    # a delete needs nothing to embed, and ignores the rest
    assert item({"item_id": "m9", "deleted": True, "tags": "junk"}).deleted is True
    assert item({"item_id": "m9", "deleted": False, "title": "t"}).deleted is False


def test_item_rejections():
    assert rejects(item, {"title": "t"}, "item_id") == "missing item_id"
    assert rejects(item, {"item_id": "m", "deleted": "yes"}, "deleted") == \
        "deleted must be a boolean"
    assert rejects(item, {"item_id": "m", "deleted": 1}, "deleted") == \
        "deleted must be a boolean"
    assert rejects(item, {"item_id": "m", "title": "t", "tags": "sci-fi"}, "tags") == \
        "tags must be a list of strings"
    assert rejects(item, {"item_id": "m", "title": "t", "tags": ["a", 1]}, "tags") == \
        "tags must be a list of strings"
    assert rejects(item, {"item_id": "m", "title": "t", "tags": None}, "tags") == \
        "tags must be a list of strings"
    assert rejects(item, {"item_id": "m"}, "embed") == \
        "item has no title, text or tags to embed"
    assert rejects(item, {"item_id": "m", "title": " ", "text": "", "tags": []}, "embed") == \
        "item has no title, text or tags to embed"
    assert rejects(item, {"item_id": "m", "title": "x" * (MAX_CHARS + 1)}, "title") == \
        f"title too long: {MAX_CHARS + 1} chars > {MAX_CHARS}"
    assert rejects(item, {"item_id": "m", "title": 3}, "title") == \
        "title must be a string, got int"
    assert rejects(item, {"item_id": "m", "title": "t", "ts": -0.5}, "ts") == \
        "ts must be epoch seconds >= 0"
    rejects(item, None, "tombstone")
    rejects(item, [1, 2], "not a JSON object")


def test_embed_text_skips_empty_parts():
    assert ItemEvent("a", False, title="T").embed_text() == "T"
    assert ItemEvent("a", False, text="body").embed_text() == "body"
    assert ItemEvent("a", False, tags=("x", "y")).embed_text() == "x y"
    assert ItemEvent("a", False, title="T", tags=("x",)).embed_text() == "T. x"
    assert ItemEvent("a", True).embed_text() == ""


# --- feedback ----------------------------------------------------------------------

def test_feedback_valid():
    f = feedback({"user_id": "u", "item_id": 5, "type": "rate", "rating": 2,
                  "recommendation_id": "r-1", "ts": 9})
    assert f == FeedbackEvent(user_id="u", item_id="5", type="rate", ts=9.0,
                              recommendation_id="r-1", rating=2.0)
    f = feedback({"user_id": "u", "item_id": "m", "type": "click"})
    assert f == FeedbackEvent(user_id="u", item_id="m", type="click", ts=REC_TS)
    for kind in FEEDBACK_TYPES - {"rate"}:
        assert feedback({"user_id": "u", "item_id": "m", "type": kind}).type == kind


def test_feedback_on_several_items_is_one_event_per_item():
    events = parse_feedback(rec({"user_id": "u", "item_ids": ["a", 7, "b", "a"], "type": "skip",
                                 "recommendation_id": "r-1", "ts": 9}, topic="feedback"), LIMITS)
    assert events == [FeedbackEvent(user_id="u", item_id=i, type="skip", ts=9.0,
                                    recommendation_id="r-1") for i in ("a", "7", "b")]
    # null is absent, as for every field
    assert len(parse_feedback(rec({"user_id": "u", "item_id": "m", "item_ids": None,
                                   "type": "click"}), LIMITS)) == 1


def test_feedback_on_several_items_rejections():
    many = lambda ids, **kw: parse_feedback(  # noqa: E731
        rec({"user_id": "u", "item_ids": ids, "type": "skip", **kw}), LIMITS)
    for bad, fragment in [([], "non-empty list"), ("a", "non-empty list"),
                          ({"a": 1}, "non-empty list"), (["a", ""], "empty item_ids"),
                          (["a", 1.5], "must be a string"), (["a", "x" * 41], "too long"),
                          (list("abcde"), "too many item_ids: 5 > 4")]:
        assert fragment in rejects(many, bad, fragment)
    with pytest.raises(ContractError, match="both given") as info:
        many(["a"], item_id="b")
    assert info.value.reason == "invalid_field"
    with pytest.raises(ContractError) as info:
        many(list("abcde"))
    assert info.value.reason == "too_long"


def test_feedback_rejections():
    assert rejects(feedback, {"user_id": "u", "item_id": "m", "type": "view"}, "type") == \
        "unknown feedback type 'view'"
    assert rejects(feedback, {"user_id": "u", "item_id": "m", "type": "rate"}, "rating") == \
        "type rate needs a rating"
    assert rejects(feedback, {"item_id": "m", "type": "click"}, "user_id") == "missing user_id"
    assert rejects(feedback, {"user_id": "u", "type": "click"}, "item_id") == "missing item_id"
    assert rejects(feedback, {"user_id": "u", "item_id": "m", "type": "click",
                              "recommendation_id": True}, "recommendation_id") == \
        "recommendation_id must be a string, got bool"
    rejects(feedback, b"\xff", "not JSON")
    rejects(feedback, None, "tombstone")
    with pytest.raises(ContractError, match="too large"):
        parse_feedback(rec({"user_id": "u", "item_id": "m", "type": "click"}), replace(LIMITS, max_bytes=10))


# --- emitted records ---------------------------------------------------------------

def test_recommendation_id_deterministic_and_distinct():
    a = recommendation_id("u1", "e1")
    assert a == recommendation_id("u1", "e1")
    assert uuid.UUID(a).version == 5
    others = {recommendation_id("u2", "e1"), recommendation_id("u1", "e2"),
              recommendation_id("u1e", "1"), recommendation_id("u", "1e1")}
    assert a not in others and len(others) == 4


def test_recommendation_fields():
    e = ActivityEvent(event_id="e7", user_id="u3", type="click", ts=123.0, partition=0,
                      offset=1, item_id="m1")
    out = recommendation(e, [("m2", 0.123456789, "interest 1 of 2: \"A\""),
                             ("m3", -0.5, "trending")], "model-abc", 456.5)
    assert out == {
        "recommendation_id": recommendation_id("u3", "e7"),
        "user_id": "u3",
        "event_id": "e7",
        "event_ts": 123.0,
        "items": [{"item_id": "m2", "score": 0.123457, "reason": 'interest 1 of 2: "A"'},
                  {"item_id": "m3", "score": -0.5, "reason": "trending"}],
        "model_version": "model-abc",
        "emitted_at": 456.5,
    }
    json.dumps(out)  # serialisable
    assert recommendation(e, [], "v", 1.0)["items"] == []


def test_recommendation_scores_are_plain_floats():
    import numpy as np

    e = ActivityEvent("e", "u", "click", 1.0, 0, 0, item_id="m")
    out = recommendation(e, [("m", np.float32(0.25), "trending")], "v", 2.0)
    assert type(out["items"][0]["score"]) is float
    assert json.loads(dumps(out))["items"][0]["score"] == 0.25


def _sha(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def test_dead_letter_utf8_payload():
    raw = '{"bad": "é"'.encode("utf-8")
    r = Record("user-activity", 3, 44, REC_TS, b"k", raw)
    assert dead_letter(r, "not JSON: x", "not_json", 4096) == {
        "source_topic": "user-activity", "partition": 3, "offset": 44, "timestamp": REC_TS,
        "key": "k", "reason": "not_json", "error": "not JSON: x", "payload": '{"bad": "é"',
        "payload_bytes": len(raw), "payload_sha256": _sha(raw), "payload_truncated": False}


def test_dead_letter_binary_payload():
    raw = b"\xff\x00\xfebinary"
    r = Record("items", 1, 2, REC_TS, None, raw)
    out = dead_letter(r, "not JSON", "not_json", 4096)
    assert out["payload"] == base64.b64encode(raw).decode("ascii")
    assert out["payload_encoding"] == "base64" and out["key"] == ""
    assert base64.b64decode(out["payload"]) == raw


def test_dead_letter_tombstone():
    out = dead_letter(Record("items", 0, 0, REC_TS, b"k", None), "empty record (tombstone)",
                      "empty", 4096)
    assert out["payload"] == "" and "payload_encoding" not in out
    assert out["payload_bytes"] == 0


def test_dead_letter_holds_a_bounded_prefix_with_size_and_hash():
    raw = ('{"text": "' + "é" * 600_000 + '"}').encode("utf-8")  # 1.2 MB: over any message limit
    out = dead_letter(Record("user-activity", 0, 9, REC_TS, b"u", raw), "record too large",
                      "too_large", 1001)  # cuts "é" (2 bytes) in half: that character goes
    assert out["payload_truncated"] and out["payload_bytes"] == len(raw)
    assert out["payload_sha256"] == _sha(raw)
    assert raw.startswith(out["payload"].encode("utf-8"))
    assert len(out["payload"].encode("utf-8")) == 1000 and "payload_encoding" not in out
    assert len(dumps(out)) < 2000


def test_every_rejection_names_a_known_reason():
    from stream_app.contract import REASONS

    for value, reason in [(b"[1]", "not_json"), (b"{", "not_json"),
                          (b'{"type": "click", "item_id": "m"}', "missing_field"),
                          (b'{"user_id": "u", "type": "zap", "item_id": "m"}', "unknown_type"),
                          (b'{"user_id": "u", "type": "rate", "item_id": "m", "rating": 1e300}',
                           "out_of_range"),
                          (b'{"user_id": "u", "type": "click", "item_id": "m", "ts": 4e12}',
                           "future_ts"),
                          (b'{"a": ' * 40 + b"1" + b"}" * 40, "too_deep")]:
        with pytest.raises(ContractError) as err:
            parse_activity(Record("user-activity", 0, 0, REC_TS, b"u", value), LIMITS)
        assert err.value.reason == reason and reason in REASONS, (value, err.value)


def test_dumps_is_compact_utf8():
    assert dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode("utf-8")


def test_dumps_writes_non_finite_numbers_as_null():
    out = dumps({"loss": float("nan"), "x": [1.5, float("inf")], "n": {"y": -float("inf")}})
    assert json.loads(out) == {"loss": None, "x": [1.5, None], "n": {"y": None}}
    assert b"NaN" not in out and b"Infinity" not in out


# --- input limits ---------------------------------------------------------------------

def test_ids_longer_than_the_limit_are_rejected():
    ok = {"user_id": "u" * 40, "type": "click", "item_id": "m" * 40, "event_id": "e" * 40}
    assert activity(ok).user_id == "u" * 40
    for name in ("user_id", "item_id", "event_id"):
        rejects(activity, {**ok, name: "x" * 41}, f"{name} too long: 41 chars > 40")
    rejects(item, {"item_id": "i" * 41, "title": "t"}, "item_id too long")
    rejects(feedback, {"user_id": "u", "item_id": "m", "type": "click",
                       "recommendation_id": "r" * 41}, "recommendation_id too long")


def test_tags_are_bounded_in_number_and_length():
    assert item({"item_id": "i", "tags": ["t"] * 5}).tags == ("t",) * 5
    rejects(item, {"item_id": "i", "tags": ["t"] * 6}, "too many tags: 6 > 5")
    rejects(item, {"item_id": "i", "tags": ["ok", "x" * 21]}, "tag too long: 21 chars > 20")


def test_ratings_outside_the_range_are_rejected():
    assert activity({"user_id": "u", "type": "rate", "item_id": "m", "rating": 10}).rating == 10
    assert activity({"user_id": "u", "type": "rate", "item_id": "m", "rating": -10}).rating == -10
    rejects(activity, {"user_id": "u", "type": "rate", "item_id": "m", "rating": 1e300},
            "rating 1e+300 outside [-10, 10]")
    rejects(activity, {"user_id": "u", "type": "rate", "item_id": "m", "rating": -10.5},
            "outside [-10, 10]")
    rejects(feedback, {"user_id": "u", "item_id": "m", "type": "rate", "rating": 11},
            "outside [-10, 10]")


def test_deeply_nested_json_is_rejected_without_recursing():
    def nested(depth: int) -> dict:
        value: object = 1
        for _ in range(depth - 1):
            value = [value]
        return {"user_id": "u", "type": "click", "item_id": "m", "extra": value}

    assert activity(nested(8)).user_id == "u"  # the object is level 1, 7 lists inside it
    rejects(activity, nested(9), "JSON nested deeper than 8")
    deep = b'{"user_id": "u", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    big = replace(LIMITS, max_bytes=1_000_000)
    with pytest.raises(ContractError, match="nested deeper"):  # json's recursion limit
        parse_activity(rec(deep), big)


def test_a_ts_far_ahead_of_the_broker_timestamp_is_rejected():
    base = {"user_id": "u", "type": "click", "item_id": "m"}
    assert activity({**base, "ts": REC_TS + 3600}).ts == REC_TS + 3600  # within the skew
    assert activity({**base, "ts": REC_TS - 86400 * 365}).ts == REC_TS - 86400 * 365  # late: ok
    reason = rejects(activity, {**base, "ts": REC_TS * 1000}, "ahead of the record's broker")
    assert "milliseconds" in reason
    rejects(feedback, {"user_id": "u", "item_id": "m", "type": "click", "ts": REC_TS + 7200},
            "more than 3600 s ahead")
    rejects(item, {"item_id": "i", "title": "t", "ts": REC_TS * 1000}, "ahead")
    unknown = Record("user-activity", 0, 0, 0.0, b"k", json.dumps(
        {**base, "ts": REC_TS * 1000}).encode())
    assert parse_activity(unknown, LIMITS).ts == REC_TS * 1000  # no broker time: no check


def test_the_limits_come_from_settings():
    from stream_app.config import Settings

    s = Settings.from_env({"STREAM_APP_MAX_ID_CHARS": "9", "STREAM_APP_RATING_MAX": "5",
                           "STREAM_APP_MAX_FUTURE_SKEW_S": "60"})
    limits = s.limits()
    assert (limits.max_id_chars, limits.rating_max, limits.max_future_skew_s) == (9, 5.0, 60.0)
    assert (limits.max_bytes, limits.max_text_chars) == (s.max_record_bytes, s.max_text_chars)
    with pytest.raises(ValueError, match="RATING_MIN"):
        Settings.from_env({"STREAM_APP_RATING_MIN": "10"})
