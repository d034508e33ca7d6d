"""The public event contract: parsing, validation and the records the app emits.

Every input record goes through ``parse_*``; anything that does not fit raises
``ContractError`` with a reason that ends up in the dead-letter record.
``docs/contract.md`` documents the same shapes with examples.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

FORGET = "forget"  # an activity type: remove everything kept about the user
ACTIVITY_TYPES = frozenset(
    {"view", "click", "like", "purchase", "rate", "search", "text", "dislike", "skip", FORGET})
FEEDBACK_TYPES = frozenset({"click", "skip", "like", "dislike", "purchase", "rate"})
_REC_NAMESPACE = uuid.UUID("6f1c1f2e-3b8e-4a53-9d0c-5a2f0b7e9a11")


class ContractError(ValueError):
    """A record that does not satisfy the contract: the message says why, ``reason`` is a
    short code from ``REASONS`` (the dead letter's ``reason`` and a metric label)."""

    def __init__(self, message: str, reason: str = "invalid_field") -> None:
        super().__init__(message)
        assert reason in REASONS, reason
        self.reason = reason


# The ``reason`` of a dead letter: why a record was rejected.
REASONS = {
    "empty": "a tombstone (no value)",
    "too_large": "the record's value exceeds `max_record_bytes`",
    "not_json": "not UTF-8 JSON, or not a JSON object",
    "too_deep": "JSON nested deeper than `max_json_depth`",
    "missing_field": "a required field is missing or empty",
    "invalid_field": "a field of the wrong type or form",
    "too_long": "an id, text or tag list over its limit",
    "out_of_range": "a number out of range (a rating outside the accepted range, a "
                    "non-finite or negative number)",
    "future_ts": "`ts` more than `max_future_skew_s` ahead of the broker timestamp",
    "unknown_type": "an activity or feedback type the contract does not define",
    "unknown_item": "the item is not in the catalog",
    "processing_failed": "the record failed on its own when its batch was split",
}


@dataclass(frozen=True)
class Limits:
    """What an input record may hold (no defaults here: ``Settings.limits()``)."""

    max_bytes: int  # the record's value
    max_text_chars: int  # title, text, free text
    max_id_chars: int  # user, item, event and recommendation ids
    max_tags: int
    max_tag_chars: int
    rating_min: float
    rating_max: float
    max_json_depth: int  # nested arrays / objects
    max_future_skew_s: float  # how far ``ts`` may be ahead of the broker's timestamp
    max_feedback_items: int  # items one feedback record may name (``item_ids``)


@dataclass(frozen=True)
class Record:
    """One Kafka record as the agents see it, before parsing."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka record timestamp, epoch seconds
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class ItemEvent:
    item_id: str
    deleted: bool
    title: str = ""
    text: str = ""
    tags: tuple[str, ...] = ()
    ts: float = 0.0
    vector: tuple[float, ...] | None = None  # the item's own vector: not encoded

    def embed_text(self) -> str:
        """What the encoder sees: title, text and tags."""
        parts = [self.title, self.text, " ".join(self.tags)]
        return ". ".join(p for p in parts if p)


@dataclass(frozen=True)
class ActivityEvent:
    event_id: str
    user_id: str
    type: str
    ts: float
    partition: int
    offset: int
    item_id: str | None = None
    text: str | None = None
    rating: float | None = None
    topic: str = ""


@dataclass(frozen=True)
class FeedbackEvent:
    user_id: str
    item_id: str
    type: str
    ts: float
    recommendation_id: str | None = None
    rating: float | None = None


def _load_object(record: Record, limits: Limits) -> dict[str, Any]:
    if record.value is None:
        raise ContractError("empty record (tombstone)", "empty")
    if len(record.value) > limits.max_bytes:
        raise ContractError(f"record too large: {len(record.value)} bytes > {limits.max_bytes}",
                            "too_large")
    try:
        obj = json.loads(record.value)
    except RecursionError:
        raise ContractError(f"JSON nested deeper than {limits.max_json_depth}",
                            "too_deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ContractError(f"not JSON: {exc}", "not_json") from None
    if not isinstance(obj, dict):
        raise ContractError(f"not a JSON object: {type(obj).__name__}", "not_json")
    if _depth(obj) > limits.max_json_depth:
        raise ContractError(f"JSON nested deeper than {limits.max_json_depth}", "too_deep")
    return obj


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def _str(obj: Mapping[str, Any], name: str, required: bool, max_chars: int) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ContractError(f"missing {name}", "missing_field")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ContractError(f"{name} must be a string, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        if required:
            raise ContractError(f"empty {name}", "missing_field")
        return None
    if len(value) > max_chars:
        raise ContractError(f"{name} too long: {len(value)} chars > {max_chars}", "too_long")
    return value


def _number(obj: Mapping[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ContractError(f"{name} out of range", "out_of_range") from None
    if not math.isfinite(value):
        raise ContractError(f"{name} must be finite", "out_of_range")
    return value


def _event_ts(obj: Mapping[str, Any], record: Record, limits: Limits) -> float:
    ts = _number(obj, "ts")
    if ts is None:
        return record.timestamp
    if ts < 0:
        raise ContractError("ts must be epoch seconds >= 0", "out_of_range")
    if record.timestamp > 0 and ts > record.timestamp + limits.max_future_skew_s:
        raise ContractError(f"ts {ts:.0f} is more than {limits.max_future_skew_s:.0f} s ahead "
                            f"of the record's broker timestamp {record.timestamp:.0f} "
                            "(milliseconds instead of seconds?)", "future_ts")
    return ts


def _rating(obj: Mapping[str, Any], limits: Limits) -> float | None:
    rating = _number(obj, "rating")
    if rating is not None and not limits.rating_min <= rating <= limits.rating_max:
        raise ContractError(f"rating {rating:g} outside [{limits.rating_min:g}, "
                            f"{limits.rating_max:g}]", "out_of_range")
    return rating


def _text(obj: Mapping[str, Any], name: str, max_chars: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ContractError(f"{name} too long: {len(value)} chars > {max_chars}", "too_long")
    return value if value.strip() else None


def _vector(obj: Mapping[str, Any], dim: int | None) -> tuple[float, ...] | None:
    """The optional ``vector``: a list of ``dim`` finite numbers, not all zero."""
    value = obj.get("vector")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ContractError("vector must be a non-empty list of numbers")
    if dim is not None and len(value) != dim:
        raise ContractError(f"vector has {len(value)} numbers, the model's dimension is {dim}")
    try:
        floats = tuple(float(v) for v in value)
    except OverflowError:
        raise ContractError("vector out of range", "out_of_range") from None
    if not all(math.isfinite(v) for v in floats):
        raise ContractError("vector must hold finite numbers", "out_of_range")
    if not any(floats):
        raise ContractError("vector must not be all zeros", "out_of_range")
    return floats


def parse_item(record: Record, limits: Limits, dim: int | None = None) -> ItemEvent:
    """An item event; ``dim``: the model's dimension, which a ``vector`` must have."""
    obj = _load_object(record, limits)
    item_id = _str(obj, "item_id", True, limits.max_id_chars)
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        raise ContractError("deleted must be a boolean")
    ts = _event_ts(obj, record, limits)
    if deleted:
        return ItemEvent(item_id=item_id, deleted=True, ts=ts)
    title = _text(obj, "title", limits.max_text_chars) or ""
    text = _text(obj, "text", limits.max_text_chars) or ""
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ContractError("tags must be a list of strings")
    if len(tags) > limits.max_tags:
        raise ContractError(f"too many tags: {len(tags)} > {limits.max_tags}", "too_long")
    if any(len(t) > limits.max_tag_chars for t in tags):
        raise ContractError(f"tag too long: {max(len(t) for t in tags)} chars > "
                            f"{limits.max_tag_chars}", "too_long")
    vector = _vector(obj, dim)
    if not (title or text or tags or vector):
        raise ContractError("item has no title, text or tags to embed", "missing_field")
    return ItemEvent(item_id=item_id, deleted=False, title=title, text=text,
                     tags=tuple(tags), ts=ts, vector=vector)


def parse_activity(record: Record, limits: Limits) -> ActivityEvent:
    obj = _load_object(record, limits)
    user_id = _str(obj, "user_id", True, limits.max_id_chars)
    kind = _str(obj, "type", True, limits.max_id_chars)
    if kind not in ACTIVITY_TYPES:
        raise ContractError(f"unknown type {kind!r}", "unknown_type")
    item_id = _str(obj, "item_id", False, limits.max_id_chars)
    text = _text(obj, "text", limits.max_text_chars)
    if kind == FORGET:
        item_id = text = None
    elif item_id is None and text is None:
        raise ContractError("needs item_id or text", "missing_field")
    rating = _rating(obj, limits)
    if kind == "rate" and rating is None:
        raise ContractError("type rate needs a rating", "missing_field")
    event_id = _str(obj, "event_id", False, limits.max_id_chars) or (
        f"{record.topic}/{record.partition}/{record.offset}")
    return ActivityEvent(event_id=event_id, user_id=user_id, type=kind,
                         ts=_event_ts(obj, record, limits), partition=record.partition,
                         offset=record.offset, item_id=item_id, text=text, rating=rating,
                         topic=record.topic)


def parse_feedback(record: Record, limits: Limits) -> list[FeedbackEvent]:
    """One event per item the record names: ``item_id``, or ``item_ids`` (one action on
    several items shown together, e.g. every item of a list the user passed over)."""
    obj = _load_object(record, limits)
    kind = _str(obj, "type", True, limits.max_id_chars)
    if kind not in FEEDBACK_TYPES:
        raise ContractError(f"unknown feedback type {kind!r}", "unknown_type")
    rating = _rating(obj, limits)
    if kind == "rate" and rating is None:
        raise ContractError("type rate needs a rating", "missing_field")
    user_id = _str(obj, "user_id", True, limits.max_id_chars)
    item_ids = _feedback_items(obj, limits)
    ts = _event_ts(obj, record, limits)
    rec_id = _str(obj, "recommendation_id", False, limits.max_id_chars)
    return [FeedbackEvent(user_id=user_id, item_id=item_id, type=kind, ts=ts,
                          recommendation_id=rec_id, rating=rating) for item_id in item_ids]


def _feedback_items(obj: Mapping[str, Any], limits: Limits) -> list[str]:
    """The items a feedback record names: ``item_id`` or ``item_ids`` (not both; repeats
    once)."""
    if obj.get("item_ids") is None:
        return [_str(obj, "item_id", True, limits.max_id_chars)]
    if obj.get("item_id") is not None:
        raise ContractError("item_id and item_ids both given: send one of them")
    ids = obj["item_ids"]
    if not isinstance(ids, list) or not ids:
        raise ContractError("item_ids must be a non-empty list of ids", "invalid_field")
    if len(ids) > limits.max_feedback_items:
        raise ContractError(f"too many item_ids: {len(ids)} > {limits.max_feedback_items}",
                            "too_long")
    return list(dict.fromkeys(_str({"item_ids": i}, "item_ids", True, limits.max_id_chars)
                              for i in ids))


def recommendation_id(user_id: str, event_id: str) -> str:
    """Deterministic per (user, triggering event): a replayed emission is recognisable."""
    return str(uuid.uuid5(_REC_NAMESPACE, f"{user_id}\x00{event_id}"))


def recommendation(event: ActivityEvent, items: list[tuple[str, float, str]],
                   model_version: str, emitted_at: float) -> dict[str, Any]:
    return {
        "recommendation_id": recommendation_id(event.user_id, event.event_id),
        "user_id": event.user_id,
        "event_id": event.event_id,
        "event_ts": event.ts,
        "items": [{"item_id": i, "score": round(float(s), 6), "reason": r} for i, s, r in items],
        "model_version": model_version,
        "emitted_at": emitted_at,
    }


def dead_letter(record: Record, error: str, reason: str, payload_bytes: int) -> dict[str, Any]:
    """The dead-letter value: where the record came from, why, and what it held: at most
    ``payload_bytes`` of the value (UTF-8 text, or base64 when it is not text), its full
    size and sha256, so the record can be found and the letter always fits a message."""
    raw = record.value or b""
    prefix = raw[:max(payload_bytes, 0)]
    out: dict[str, Any] = {"source_topic": record.topic, "partition": record.partition,
                           "offset": record.offset, "timestamp": record.timestamp,
                           "key": _text_or_base64(record.key or b"")[0][:1024],
                           "reason": reason, "error": error[:2000],
                           "payload_bytes": len(raw),
                           "payload_sha256": hashlib.sha256(raw).hexdigest(),
                           "payload_truncated": len(prefix) < len(raw)}
    out["payload"], encoding = _text_or_base64(prefix, cut=len(prefix) < len(raw))
    if encoding:
        out["payload_encoding"] = encoding
    return out


def _text_or_base64(raw: bytes, cut: bool = False) -> tuple[str, str | None]:
    """UTF-8 text when it is (a prefix ``cut`` mid-character loses that character), else
    base64 (with the encoding's name)."""
    for drop in range(4 if cut else 1):
        try:
            return raw[:len(raw) - drop].decode("utf-8"), None
        except UnicodeDecodeError:
            continue
    return base64.b64encode(raw).decode("ascii"), "base64"


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON that every language reads: a NaN or an infinity (a diverged
    training loss, say) is written as null, never as the non-standard ``NaN``."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except ValueError:
        return json.dumps(_finite(obj), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
