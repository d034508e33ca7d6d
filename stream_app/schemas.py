"""Published schemas: JSON Schema (draft 2020-12) of every topic's records and OpenAPI 3.1
documents of the worker's and the trainer's HTTP API.

Built from the contract's own definitions, not copied from them: the activity and feedback
types and the dead-letter reasons come from ``stream_app.contract``, the limits an input
record must keep to from ``Settings().limits()`` (the default settings), topic names,
``top_k`` and ``max_k`` from ``Settings()``. ``docs/schemas/`` holds the output of
``generate()`` (``tests/test_schemas.py`` checks it is up to date); after a change to the
contract or a default, rewrite the files with::

    .venv/bin/python -c "from stream_app.schemas import write; write()"

What the parser checks that JSON Schema cannot say is in each schema's ``description``
and its ``x-stream-app`` annotation: the record's size in bytes (``max_record_bytes``),
``ts`` against the record's broker timestamp (``max_future_skew_s``), and an id sent as a
number with a zero fraction (``7.0``: JSON Schema's ``integer`` takes it, the parser
wants a string or an integer literal).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from stream_app import __version__
from stream_app.config import Settings, env_name
from stream_app.contract import ACTIVITY_TYPES, FEEDBACK_TYPES, FORGET, REASONS, Limits

DIALECT = "https://json-schema.org/draft/2020-12/schema"
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

# What ``contract.dead_letter`` keeps of a rejected record's key and error message.
DEAD_LETTER_KEY_CHARS = 1024
DEAD_LETTER_ERROR_CHARS = 2000

_NOT_BLANK = r"\S"  # the parser strips a string and takes an empty one as missing
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SHA256 = r"^[0-9a-f]{64}$"
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
_FINITE = sys.float_info.max  # the parser turns numbers into finite floats


def _env(name: str) -> str:
    return env_name(next(f for f in dataclasses.fields(Settings) if f.name == name))


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = True,
         **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    out.update(extra)
    if required:
        out["required"] = list(required)
    out["properties"] = properties
    if closed:
        out["additionalProperties"] = False
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional input field: JSON ``null`` is taken as absent (``obj.get(name)``)."""
    return {"anyOf": [schema, {"type": "null"}]}


# --- inputs -------------------------------------------------------------------------

def _id(limits: Limits, what: str, required: bool) -> dict[str, Any]:
    """``contract._str``: a string of at most ``max_id_chars``, or an integer taken as its
    decimal string (as long as that is); required: not blank."""
    n = limits.max_id_chars
    text: dict[str, Any] = {"type": "string", "maxLength": n}
    if required:
        text.update(minLength=1, pattern=_NOT_BLANK)
    schema: dict[str, Any] = {
        "description": f"{what}: a string of at most {n} characters "
                       f"(`{_env('max_id_chars')}`) or an integer"
                       + (", not blank" if required else "; empty or blank: absent"),
        "anyOf": [text, {"$ref": "#/$defs/integer_id"}]}
    if not required:
        schema["anyOf"].append({"type": "null"})
    return schema


def _text(limits: Limits, what: str) -> dict[str, Any]:
    """``contract._text``: a string of at most ``max_text_chars`` (blank: absent)."""
    return {"description": f"{what}: at most {limits.max_text_chars} characters "
                           f"(`{_env('max_text_chars')}`); blank: absent",
            "type": ["string", "null"], "maxLength": limits.max_text_chars}


def _ts(what: str) -> dict[str, Any]:
    return {"description": f"{what}, epoch seconds (default: the record's broker timestamp); "
                           f"at most `{_env('max_future_skew_s')}` ahead of the broker "
                           "timestamp (checked by the worker, not expressible here)",
            "type": ["number", "null"], "minimum": 0, "maximum": _FINITE}


def _rating(limits: Limits) -> dict[str, Any]:
    return {"description": f"required for `rate`: a number in [{limits.rating_min:g}, "
                           f"{limits.rating_max:g}] (`{_env('rating_min')}`, "
                           f"`{_env('rating_max')}`)",
            "type": ["number", "null"], "minimum": limits.rating_min,
            "maximum": limits.rating_max}


def _rate_needs_a_rating() -> dict[str, Any]:
    return {"if": {"required": ["type"], "properties": {"type": {"const": "rate"}}},
            "then": {"required": ["rating"], "properties": {"rating": {"type": "number"}}}}


def _integer_id(limits: Limits) -> dict[str, Any]:
    """An integer id: its decimal string (sign included) at most ``max_id_chars`` long.
    Exact bounds: a double's would let a digit more through."""
    n = limits.max_id_chars
    return {"description": f"an id sent as an integer: taken as its decimal string, at "
                           f"most {n} characters",
            "type": "integer", "exclusiveMinimum": -(10 ** (n - 1)),
            "exclusiveMaximum": 10 ** n}


def _depth_defs(limits: Limits) -> dict[str, Any]:
    """``depth_N``: a value whose arrays and objects nest at most N levels
    (``contract._depth``); a record must be ``depth_<max_json_depth>``."""
    defs: dict[str, Any] = {"depth_0": {"type": ["string", "number", "boolean", "null"]}}
    for n in range(1, limits.max_json_depth + 1):
        inner = {"$ref": f"#/$defs/depth_{n - 1}"}
        defs[f"depth_{n}"] = {"items": inner, "additionalProperties": inner}
    return defs


def _input(settings: Settings, topic: str, key: str, title: str, description: str,
           properties: dict[str, Any], required: tuple[str, ...], rules: list[dict[str, Any]]
           ) -> dict[str, Any]:
    limits = settings.limits()
    return {
        "$schema": DIALECT,
        "$id": f"urn:stream-app:schema:{topic}",
        "title": title,
        "description": (
            f"{description} Fields not listed are allowed and ignored. The record's "
            f"value is a UTF-8 JSON object of at most {limits.max_bytes} bytes "
            f"(`{_env('max_record_bytes')}`) whose arrays and objects nest at most "
            f"{limits.max_json_depth} levels (`{_env('max_json_depth')}`). A record that "
            "does not fit goes to dead-letters with a `reason`."),
        "x-stream-app": _topic_note(settings, topic, key, limits),
        "type": "object",
        "required": list(required),
        "properties": properties,
        "allOf": [{"$ref": f"#/$defs/depth_{limits.max_json_depth}"}, *rules],
        "$defs": {"integer_id": _integer_id(limits), **_depth_defs(limits)},
    }


def _topic_note(settings: Settings, topic: str, key: str, limits: Limits | None = None
                ) -> dict[str, Any]:
    setting = next(f.name for f in dataclasses.fields(Settings)
                   if f.name.startswith("topic_") and getattr(settings, f.name) == topic)
    note: dict[str, Any] = {"topic": topic, "topic_setting": _env(setting), "key": key}
    if limits is not None:  # what the worker checks beyond this schema
        note.update(max_record_bytes=limits.max_bytes,
                    max_future_skew_s=limits.max_future_skew_s)
    return note


def items_schema(settings: Settings) -> dict[str, Any]:
    limits = settings.limits()
    not_blank = {"type": "string", "pattern": _NOT_BLANK}
    tags = {"description": f"at most {limits.max_tags} tags (`{_env('max_tags')}`) of at "
                           f"most {limits.max_tag_chars} characters "
                           f"(`{_env('max_tag_chars')}`); embedded with title and text",
            "type": "array", "maxItems": limits.max_tags,
            "items": {"type": "string", "maxLength": limits.max_tag_chars}}
    return _input(
        settings, settings.topic_items, "item_id", "items",
        "An item to add, update (the last event of an item wins) or delete. Unless "
        "`deleted` is true, it needs a title, a text or tags to embed, or a `vector`.",
        {"item_id": _id(limits, "the item", True),
         "title": {"description": "embedded as `title. text. tags`; checked unless "
                                  "`deleted` is true (see `allOf`)"},
         "text": {"description": "embedded with the title; checked unless `deleted` is "
                                 "true (see `allOf`)"},
         "tags": {"description": "a list of strings; checked unless `deleted` is true "
                                 "(see `allOf`)"},
         "ts": _ts("when the item was added"),
         "deleted": {"description": "true: remove the item from every worker's catalog "
                                    "(title, text and tags are then ignored)",
                     "type": "boolean"},
         "vector": {"description": "the item's own vector, used instead of encoding its "
                                   "text: as many finite numbers as the model's dimension "
                                   "(checked by the worker), not all zero; scaled to unit "
                                   "length", "type": "array", "minItems": 1,
                    "items": {"type": "number"}}},
        ("item_id",),
        [{"if": {"required": ["deleted"], "properties": {"deleted": {"const": True}}},
          "else": {
              "properties": {"title": _text(limits, "the title"),
                             "text": _text(limits, "the description"), "tags": tags},
              "anyOf": [{"required": ["title"], "properties": {"title": not_blank}},
                        {"required": ["text"], "properties": {"text": not_blank}},
                        {"required": ["tags"], "properties": {"tags": {"minItems": 1}}},
                        {"required": ["vector"]}]}}])


def activity_schema(settings: Settings) -> dict[str, Any]:
    limits = settings.limits()
    not_blank = {"type": "string", "pattern": _NOT_BLANK}
    given_id = {"anyOf": [not_blank, {"type": "integer"}]}
    return _input(
        settings, settings.topic_activity, "user_id", "user-activity",
        "What a user did. Every type but `forget` needs an `item_id` or a `text` (both: a "
        "review of the item); `rate` needs a `rating`; `forget` removes everything kept "
        "about the user and emits no recommendation.",
        {"event_id": _id(limits, "the event (duplicates are applied once; default "
                                 "`<topic>/<partition>/<offset>`)", False),
         "user_id": _id(limits, "the user", True),
         "type": {"description": "weight per type is a setting; `forget`: remove the user",
                  "enum": sorted(ACTIVITY_TYPES)},
         "item_id": _id(limits, "the item (must be in the catalog; ignored for "
                                "`forget`)", False),
         "text": _text(limits, "free text: a query, a review, a stated preference"),
         "rating": _rating(limits),
         "ts": _ts("event time")},
        ("user_id", "type"),
        [_rate_needs_a_rating(),
         {"if": {"required": ["type"], "properties": {"type": {"const": FORGET}}},
          "else": {"anyOf": [{"required": ["item_id"], "properties": {"item_id": given_id}},
                             {"required": ["text"], "properties": {"text": not_blank}}]}}])


def feedback_schema(settings: Settings) -> dict[str, Any]:
    limits = settings.limits()
    return _input(
        settings, settings.topic_feedback, "user_id", "feedback",
        "What a user did with a recommended item, or with several shown together "
        "(`item_ids` instead of `item_id`: one record for, say, every item of a list the "
        "user passed over): the trainer learns from it (workers validate and count it "
        "when they read the topic).",
        {"user_id": _id(limits, "the user", True),
         "item_id": {**(one := _id(limits, "the item (must be in the catalog); null: absent",
                                   True)), "anyOf": [*one["anyOf"], {"type": "null"}]},
         "item_ids": {"description": f"the items, each as `item_id`; at most "
                                     f"{limits.max_feedback_items} "
                                     f"(`{_env('max_feedback_items')}`), repeats count once; "
                                     "unknown ones send the record to the dead letters too "
                                     "(the known ones are taken); null: absent",
                      "anyOf": [{"type": "array", "minItems": 1,
                                 "maxItems": limits.max_feedback_items,
                                 "items": _id(limits, "an item", True)}, {"type": "null"}]},
         "type": {"enum": sorted(FEEDBACK_TYPES)},
         "recommendation_id": _id(limits, "the recommendation acted on", False),
         "rating": _rating(limits),
         "ts": _ts("when the user acted")},
        ("user_id", "type"),
        [_rate_needs_a_rating(),
         {"if": {"required": ["item_ids"], "properties": {"item_ids": {"type": "array"}}},
          "then": {"properties": {"item_id": {"type": "null"}}},
          "else": {"required": ["item_id"], "properties": {"item_id": {"not": {"type": "null"}}}}}])


# --- outputs -------------------------------------------------------------------------

def _output(settings: Settings, topic: str, key: str, title: str, body: dict[str, Any]
            ) -> dict[str, Any]:
    return {"$schema": DIALECT, "$id": f"urn:stream-app:schema:{topic}", "title": title,
            "x-stream-app": _topic_note(settings, topic, key), **body}


def recommended_item(settings: Settings) -> dict[str, Any]:
    n = settings.limits().max_id_chars
    return _obj({
        "item_id": {"type": "string", "minLength": 1, "maxLength": n},
        "score": {"type": "number", "description": "rounded to 6 decimals"},
        "reason": {"type": "string",
                   "description": "`interest N of M: \"<title>\"` (the interest the item "
                                  "serves and what shaped it most), `trending`, or `picked "
                                  "next after \"<title>\"` (a trained version)"},
    }, ("item_id", "score", "reason"))


def recommendation_schema(settings: Settings) -> dict[str, Any]:
    n = settings.limits().max_id_chars
    an_id = {"type": "string", "minLength": 1, "maxLength": n}
    return _output(settings, settings.topic_recommendations, "user_id", "recommendations", {
        "description": "One per activity event (not `forget`), emitted after the event was "
                       "applied; at least once: deduplicate on `recommendation_id`.",
        **_obj({
            "recommendation_id": {"type": "string", "format": "uuid", "pattern": _UUID,
                                  "description": "UUIDv5 of (user_id, event_id): the "
                                                 "same for a re-emitted recommendation"},
            "user_id": an_id,
            "event_id": {**an_id, "description": "the activity event's id (default "
                                                 "`<topic>/<partition>/<offset>`)"},
            "event_ts": {"type": "number", "minimum": 0,
                         "description": "the activity event's time, epoch seconds"},
            "items": {"type": "array", "items": recommended_item(settings),
                      "description": f"best first; `{_env('top_k')}` "
                                     f"({settings.top_k}) items, fewer in a small catalog"},
            "model_version": {"type": "string", "minLength": 1,
                              "description": "the version that ranked: "
                                             "`<model dir>-<hash>` or "
                                             "`<encoder version>+ftNNNNN`"},
            "emitted_at": {"type": "number", "description": "wall clock, epoch seconds"},
        }, ("recommendation_id", "user_id", "event_id", "event_ts", "items",
            "model_version", "emitted_at"))})


def dead_letter_schema(settings: Settings) -> dict[str, Any]:
    return _output(settings, settings.topic_dead_letters, "the bad record's key",
                   "dead-letters", {
        "description": "A record from an input topic that could not be parsed or validated "
                       "(or that failed on its own when its batch was split), with at most "
                       f"`{_env('dead_letter_payload_bytes')}` "
                       f"({settings.dead_letter_payload_bytes}) bytes of its value.",
        **_obj({
            "source_topic": {"type": "string"},
            "partition": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "timestamp": {"type": "number", "description": "the record's broker timestamp, "
                                                           "epoch seconds"},
            "key": {"type": "string", "maxLength": DEAD_LETTER_KEY_CHARS,
                    "description": "the record key as text (base64 when it is not UTF-8), "
                                   f"first {DEAD_LETTER_KEY_CHARS} characters"},
            "reason": {"oneOf": [{"const": code, "description": text}
                                 for code, text in REASONS.items()]},
            "error": {"type": "string", "maxLength": DEAD_LETTER_ERROR_CHARS,
                      "description": "the reason in words"},
            "payload": {"type": "string",
                        "description": "a prefix of the value: UTF-8 text, or base64 with "
                                       "`payload_encoding`"},
            "payload_encoding": {"const": "base64"},
            "payload_bytes": {"type": "integer", "minimum": 0,
                              "description": "the whole value's size"},
            "payload_sha256": {"type": "string", "pattern": _SHA256,
                               "description": "the whole value's sha256, hex"},
            "payload_truncated": {"type": "boolean",
                                  "description": "whether `payload` is only a prefix"},
        }, ("source_topic", "partition", "offset", "timestamp", "key", "reason", "error",
            "payload", "payload_bytes", "payload_sha256", "payload_truncated"),
            **{"if": {"required": ["payload_encoding"]},
               "then": {"properties": {"payload": {"pattern": _BASE64}}}})})


def _scores() -> dict[str, Any]:
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    return _obj({"hr@10": unit, "ndcg@10": unit,
                 "n": {"type": "integer", "minimum": 0, "description": "examples judged"}},
                ("hr@10", "ndcg@10", "n"))


def trained_schema() -> dict[str, Any]:
    """A training round's announcement (``Trainer._round``)."""
    count = {"type": "integer", "minimum": 0}
    number = {"type": "number"}
    weight = {"type": ["number", "null"], "description": "null: the setting's weight"}
    return _obj({
        "type": {"const": "trained"},
        "version": {"type": "string", "description": "`<encoder version>+ftNNNNN`"},
        "parent": {"type": "string", "description": "the version the candidate was trained "
                                                    "from"},
        "base_version": {"type": "string", "description": "the encoder's version"},
        "created_at": number,
        "promoted": {"type": "boolean", "description": "whether workers switch to it"},
        "reason": {"type": "string"},
        "window": _obj({"from_ts": number, "to_ts": number,
                        "heldout_from_ts": {"type": ["number", "null"]}},
                       ("from_ts", "to_ts", "heldout_from_ts")),
        "examples": _obj({"train": count, "heldout": count, "replayed": count},
                         ("train", "heldout", "replayed")),
        "training": _obj({
            "windows": count, "steps": count, "positions": count,
            "loss": {"type": "number", "description": "mean of the last quarter of the "
                                                      "steps' losses"},
            "seconds": number, "positions_per_s": number,
            "blend": _obj({"sequence": number, "interest": number, "popularity": weight,
                           "covisit": weight},
                          ("sequence", "interest", "popularity", "covisit"))},
            ("windows", "steps", "positions", "loss", "seconds", "positions_per_s",
             "blend")),
        "heldout": _obj({"candidate": _scores(), "current": _scores(), "base": _scores()},
                        ("candidate", "current", "base")),
        "reverted_to": {"type": ["string", "null"],
                        "description": "the encoder version the workers were sent back to"},
        "round_seconds": number,
    }, ("type", "version", "parent", "base_version", "created_at", "promoted", "reason",
        "window", "examples", "training", "heldout", "reverted_to", "round_seconds"),
        description="a training round: the candidate version, its held-out scores and "
                    "whether it was promoted")


def version_change_schema() -> dict[str, Any]:
    """``stream-app model promote|rollback`` (``models_cli``)."""
    return _obj({"type": {"enum": ["promoted", "rolled_back"]},
                 "version": {"type": "string", "description": "the version now current"},
                 "previous": {"type": "string", "description": "the version current before"},
                 "by": {"type": "string"},
                 "created_at": {"type": "number"}},
                ("type", "version", "previous", "by", "created_at"),
                description="an operator's promotion or rollback")


def model_update_schema(settings: Settings) -> dict[str, Any]:
    return _output(settings, settings.topic_model_updates, "the version", "model-updates", {
        "description": "One record per training round, promotion and rollback. "
                       "Informational: workers follow the current version in Redis.",
        "oneOf": [trained_schema(), version_change_schema()]})


def topic_schemas(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Each topic's JSON Schema, by the topic's name in ``settings`` (default names)."""
    s = settings or Settings()
    return {s.topic_items: items_schema(s), s.topic_activity: activity_schema(s),
            s.topic_feedback: feedback_schema(s),
            s.topic_recommendations: recommendation_schema(s),
            s.topic_dead_letters: dead_letter_schema(s),
            s.topic_model_updates: model_update_schema(s)}


# --- HTTP ------------------------------------------------------------------------------

def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _counts(what: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "integer"},
            "description": what}


def _operation(op_id: str, summary: str, responses: dict[str, Any], public: bool = False,
               **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, **extra,
                          "responses": responses}
    if public:
        op["security"] = []
    else:
        op["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
    return {"get": op}


def _probes(components: dict[str, Any]) -> dict[str, Any]:
    components.update({
        "Health": _obj({"status": {"const": "alive"}, "uptime_s": {"type": "number"}},
                       ("status", "uptime_s")),
        "Readiness": _obj({
            "status": {"enum": ["ready", "not_ready"]},
            "reasons": {"type": "array", "items": {"type": "string"},
                        "description": "why it is not ready (empty when ready)"},
            "retrying": {"type": "object", "description": "batches being retried, by topic",
                         "additionalProperties": _obj(
                             {"for_s": {"type": "number"}, "cause": {"type": "string"},
                              "error": {"type": "string"}}, ("for_s", "cause", "error"))},
            "lag": {"type": "integer", "minimum": 0,
                    "description": "records behind the end of the assigned partitions"},
            "model_version": {"type": "string",
                              "description": "the version in use, once started"},
        }, ("status", "reasons", "retrying", "lag")),
    })
    return {
        "/healthz": _operation(
            "healthz", "Liveness: the process runs (restart it only when this fails)",
            {"200": _json(_ref("Health"), "alive")}, public=True),
        "/readyz": _operation(
            "readyz", "Readiness: started, in its consumer group, Redis answering, no "
            "batch stuck retrying, lag moving",
            {"200": _json(_ref("Readiness"), "ready"),
             "503": _json(_ref("Readiness"), "not ready: `reasons` says why")}, public=True),
        "/metrics": _operation(
            "metrics", "Prometheus metrics",
            {"200": {"description": "the Prometheus text format (version 0.0.4)",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            public=True),
    }


def _document(title: str, description: str, paths: dict[str, Any],
              schemas: dict[str, Any], settings: Settings) -> dict[str, Any]:
    token = _env("api_token")
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {"title": title, "version": __version__, "description": description,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": "http://localhost:{port}",
                     "variables": {"port": {"default": str(settings.web_port),
                                            "description": f"`{_env('web_port')}`"}}}],
        # no token configured: every request passes; with one, it must be sent
        "security": [{"bearer": []}, {}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": f"`Authorization: Bearer <{token}>` when `{token}` is set "
                               "(every path but `/healthz`, `/readyz` and `/metrics`)"}},
            "responses": {
                "Unauthorized": {
                    **_json(_ref("Error"), "missing or wrong bearer token"),
                    "headers": {"WWW-Authenticate": {
                        "schema": {"type": "string", "const": 'Bearer realm="stream-app"'}}}},
                "Starting": _json(_obj({"status": {"const": "starting"}}, ("status",)),
                                  "not started yet (Redis, catalog, model)")},
            "schemas": {"Error": _obj({"error": {"type": "string"}}, ("error",)),
                        **schemas},
        },
    }


def openapi(settings: Settings | None = None) -> dict[str, Any]:
    """The worker's HTTP API (``stream_app.web``)."""
    s = settings or Settings()
    schemas: dict[str, Any] = {}
    paths = _probes(schemas)
    user_id = {"name": "user_id", "in": "path", "required": True,
               "schema": {"type": "string"}}
    schemas.update({
        "WorkerStats": _obj({
            "model_version": {"type": "string", "description": "the version ranking"},
            "base_model_version": {"type": "string", "description": "the encoder's version"},
            "catalog_items": {"type": "integer", "minimum": 0},
            "uptime_s": {"type": "number"},
            "worker": _counts("this worker's counters"),
            "assigned_partitions": {"type": "array", "items": {"type": "string"},
                                    "description": "the topic/partition pairs this worker "
                                                   "consumes (sampled every lag_interval_s)"},
            "deployment": _counts("deployment-wide counters (Redis)"),
            "text_cache": _obj({"hits": {"type": "integer"}, "misses": {"type": "integer"}},
                               ("hits", "misses")),
        }, ("model_version", "base_model_version", "catalog_items", "uptime_s", "worker",
            "assigned_partitions", "deployment", "text_cache")),
        "Interests": _obj({
            "user_id": {"type": "string"},
            "events_applied": {"type": "integer", "minimum": 1},
            "last_event_ts": {"type": "number"},
            "interests": {"type": "array", "description": "strongest first", "items": _obj({
                "strength": {"type": "number", "description": "now (as of the last event)"},
                "long_term": {"type": "number"}, "short_term": {"type": "number"},
                "last_update_ts": {"type": "number"}, "age_s": {"type": "number"},
                "label": {"type": "array", "items": {"type": "string"},
                          "description": "the nearest items' titles"},
                "shaped_by": {"description": "what shaped it most: an item, or the user's "
                                             f"text (`text:` unless `{_env('show_user_text')}`)",
                              "oneOf": [
                                  {"type": "string", "pattern": "^text:"},
                                  _obj({"item_id": {"type": "string"},
                                        "title": {"type": "string"}}, ("item_id", "title"))]},
            }, ("strength", "long_term", "short_term", "last_update_ts", "age_s", "label",
                "shaped_by"))},
            "recent_items": {"type": "array", "description": "the latest chosen, newest first",
                             "items": _obj({"item_id": {"type": "string"},
                                            "title": {"type": "string"},
                                            "ts": {"type": "number"}},
                                           ("item_id", "title", "ts"))},
            "seen_items": {"type": "integer", "minimum": 0},
        }, ("user_id", "events_applied", "last_event_ts", "interests", "recent_items",
            "seen_items")),
        "Recommendations": _obj({
            "user_id": {"type": "string"},
            "model_version": {"type": "string"},
            "items": {"type": "array", "items": recommended_item(s), "description": "best first"},
        }, ("user_id", "model_version", "items")),
    })
    paths.update({
        "/stats": _operation(
            "stats", "Catalog size, model versions, this worker's and the deployment's counters",
            {"200": _json(_ref("WorkerStats"), "the worker's figures"),
             "503": {"$ref": "#/components/responses/Starting"}}),
        "/users/{user_id}/interests": _operation(
            "userInterests", "A user's interests, strongest first, and latest chosen items",
            {"200": _json(_ref("Interests"), "the user's interests"),
             "404": _json(_ref("Error"), "no interests kept for the user")},
            parameters=[user_id]),
        "/users/{user_id}/recommendations": _operation(
            "userRecommendations", "A fresh ranking for the user",
            {"200": _json(_ref("Recommendations"), "the user's top k"),
             "400": _json(_ref("Error"), f"k is not an integer in 1..{s.max_k}")},
            parameters=[user_id, {
                "name": "k", "in": "query", "required": False,
                "description": f"how many items (`{_env('top_k')}` by default, at most "
                               f"`{_env('max_k')}`)",
                "schema": {"type": "integer", "minimum": 1, "maximum": s.max_k,
                           "default": s.top_k}}]),
        # the web console's data (stream_app/console.py): JSON objects whose fields the
        # console page reads; only their paths, parameters and auth are fixed here
        "/users/{user_id}/history": _operation(
            "userHistory", "The user's snapshots after each applied event, oldest first "
            "(interests, their strengths and what shaped them, the top items)",
            {"200": _json({"type": "object"}, "the user's history (for the web console)"),
             "400": _json(_ref("Error"), "last is not an integer")},
            parameters=[user_id, {
                "name": "last", "in": "query", "required": False,
                "description": "only the newest `last` snapshots (0: all kept)",
                "schema": {"type": "integer", "default": 0}}]),
        "/models": _operation(
            "models", "Model versions with held-out scores, promotions, reverts and "
            "rollbacks, the current version and the one this worker serves",
            {"200": _json({"type": "object"}, "the versions (for the web console)")}),
        "/live": _operation(
            "live", "This worker's metrics as JSON: records, dead letters by reason, "
            "latency buckets, lag, retries",
            {"200": _json({"type": "object"}, "the metrics (for the web console)")}),
    })
    return _document(
        "stream-app worker", "Health, readiness, metrics, figures and per-user answers of "
        "one worker. The answers are JSON; errors are `{\"error\": ...}`.", paths, schemas, s)


def trainer_openapi(settings: Settings | None = None) -> dict[str, Any]:
    """The trainer's HTTP API (``stream_app.trainer_app``)."""
    s = settings or Settings()
    schemas: dict[str, Any] = {}
    paths = _probes(schemas)
    schemas["TrainerStats"] = _obj({
        "model_version": {"type": "string", "description": "the current version"},
        "memory_bytes": _counts("resident memory by process (`trainer`, `training`)"),
        "uptime_s": {"type": "number"},
        "lag_s": {"type": "number", "description": "how long its latest batch waited in Kafka"},
        "pending_examples": {"type": "integer", "minimum": 0},
        "training": {"type": "boolean", "description": "a round is running"},
        "buffered_examples": {"type": "integer", "minimum": 0},
        "counts": _counts("the trainer's counters"),
        "last_round": {"anyOf": [trained_schema(), {"type": "null"}],
                       "description": "the last round's announcement (model-updates)"},
    }, ("model_version", "memory_bytes", "uptime_s", "lag_s", "pending_examples",
        "training", "buffered_examples", "counts", "last_round"))
    paths["/stats"] = _operation(
        "trainerStats", "Version, lag, pending and buffered examples, memory, last round",
        {"200": _json(_ref("TrainerStats"), "the trainer's figures"),
         "503": {"$ref": "#/components/responses/Starting"}})
    return _document("stream-app trainer", "Health, readiness, metrics and figures of the "
                     "fine-tuning trainer.", paths, schemas, s)


# --- files ------------------------------------------------------------------------------

def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def generate(settings: Settings | None = None) -> dict[str, str]:
    """The files of ``docs/schemas/``, by name: ``<topic>.schema.json`` for each topic,
    ``openapi.json`` (worker) and ``openapi-trainer.json``."""
    s = settings or Settings()
    files = {f"{topic}.schema.json": _dumps(schema)
             for topic, schema in topic_schemas(s).items()}
    files["openapi.json"] = _dumps(openapi(s))
    files["openapi-trainer.json"] = _dumps(trainer_openapi(s))
    return files


def write(directory: Path | str = DOCS_DIR) -> list[Path]:
    """Write ``generate()``'s files into ``directory`` (the repo's ``docs/schemas``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
