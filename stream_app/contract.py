"""The public event contract: parsing, validation and the records the app emits.

Every input record goes through ``parse_*``; anything that does not fit raises
``ContractError`` with a reason that ends up in the dead-letter record.
``docs/contract.md`` documents the same shapes with examples.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

ACTIVITY_TYPES = frozenset(
    {"view", "click", "like", "purchase", "rate", "search", "text", "dislike", "skip"})
FEEDBACK_TYPES = frozenset({"click", "skip", "like", "dislike", "purchase", "rate"})
_REC_NAMESPACE = uuid.UUID("6f1c1f2e-3b8e-4a53-9d0c-5a2f0b7e9a11")


class ContractError(ValueError):
    """A record that does not satisfy the contract; the message is the reason."""


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


@dataclass(frozen=True)
class FeedbackEvent:
    user_id: str
    item_id: str
    type: str
    ts: float
    recommendation_id: str | None = None
    rating: float | None = None


def _load_object(record: Record, max_bytes: int) -> dict[str, Any]:
    if record.value is None:
        raise ContractError("empty record (tombstone)")
    if len(record.value) > max_bytes:
        raise ContractError(f"record too large: {len(record.value)} bytes > {max_bytes}")
    try:
        obj = json.loads(record.value)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError(f"not a JSON object: {type(obj).__name__}")
    return obj


def _str(obj: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ContractError(f"missing {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ContractError(f"{name} must be a string, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        if required:
            raise ContractError(f"empty {name}")
        return None
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
        raise ContractError(f"{name} out of range") from None
    if not math.isfinite(value):
        raise ContractError(f"{name} must be finite")
    return value


def _event_ts(obj: Mapping[str, Any], record: Record) -> float:
    ts = _number(obj, "ts")
    if ts is None:
        return record.timestamp
    if ts < 0:
        raise ContractError("ts must be epoch seconds >= 0")
    return ts


def _text(obj: Mapping[str, Any], name: str, max_chars: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ContractError(f"{name} too long: {len(value)} chars > {max_chars}")
    return value if value.strip() else None


def parse_item(record: Record, max_text_chars: int, max_bytes: int) -> ItemEvent:
    obj = _load_object(record, max_bytes)
    item_id = _str(obj, "item_id", required=True)
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        raise ContractError("deleted must be a boolean")
    ts = _event_ts(obj, record)
    if deleted:
        return ItemEvent(item_id=item_id, deleted=True, ts=ts)
    title = _text(obj, "title", max_text_chars) or ""
    text = _text(obj, "text", max_text_chars) or ""
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ContractError("tags must be a list of strings")
    if not (title or text or tags):
        raise ContractError("item has no title, text or tags to embed")
    return ItemEvent(item_id=item_id, deleted=False, title=title, text=text,
                     tags=tuple(tags), ts=ts)


def parse_activity(record: Record, max_text_chars: int, max_bytes: int) -> ActivityEvent:
    obj = _load_object(record, max_bytes)
    user_id = _str(obj, "user_id", required=True)
    kind = _str(obj, "type", required=True)
    if kind not in ACTIVITY_TYPES:
        raise ContractError(f"unknown type {kind!r}")
    item_id = _str(obj, "item_id", required=False)
    text = _text(obj, "text", max_text_chars)
    if item_id is None and text is None:
        raise ContractError("needs item_id or text")
    rating = _number(obj, "rating")
    if kind == "rate" and rating is None:
        raise ContractError("type rate needs a rating")
    event_id = _str(obj, "event_id", required=False) or (
        f"{record.topic}/{record.partition}/{record.offset}")
    return ActivityEvent(event_id=event_id, user_id=user_id, type=kind,
                         ts=_event_ts(obj, record), partition=record.partition,
                         offset=record.offset, item_id=item_id, text=text, rating=rating)


def parse_feedback(record: Record, max_bytes: int) -> FeedbackEvent:
    obj = _load_object(record, max_bytes)
    kind = _str(obj, "type", required=True)
    if kind not in FEEDBACK_TYPES:
        raise ContractError(f"unknown feedback type {kind!r}")
    rating = _number(obj, "rating")
    if kind == "rate" and rating is None:
        raise ContractError("type rate needs a rating")
    return FeedbackEvent(user_id=_str(obj, "user_id", required=True),
                         item_id=_str(obj, "item_id", required=True), type=kind,
                         ts=_event_ts(obj, record),
                         recommendation_id=_str(obj, "recommendation_id", required=False),
                         rating=rating)


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


def dead_letter(record: Record, error: str) -> dict[str, Any]:
    """The dead-letter value: where the record came from, why, and the payload itself."""
    out: dict[str, Any] = {"source_topic": record.topic, "partition": record.partition,
                           "offset": record.offset, "error": error}
    raw = record.value or b""
    try:
        out["payload"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        out["payload"] = base64.b64encode(raw).decode("ascii")
        out["payload_encoding"] = "base64"
    return out


def dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
