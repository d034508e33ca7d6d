"""A Python client for programs that use a stream_app deployment.

Send items, user activity and feedback, validated at the call by the workers' own
parsing code; read the recommendations topic as an async iterator; ask a worker for
a fresh ranking over HTTP::

    from stream_app.client import Client

    async with Client("127.0.0.1:9092", worker_url="http://127.0.0.1:6066") as client:
        await client.send_item("42", title="Orbit of Quiet Stars", tags=["sci-fi"])
        async with client.recommendations(["7"]) as stream:
            sent = await client.send_activity("7", "click", "42")
            async for rec in stream:          # Recommendation objects
                if rec.event_id == sent["event_id"]:
                    print(rec.item_ids)
                    break
        ranking = await client.recommend("7", k=5)  # GET /users/7/recommendations?k=5

Validation: every event is encoded to the exact bytes that will be sent, wrapped in a
``contract.Record`` with a broker timestamp of now and parsed with
``contract.parse_activity`` / ``parse_item`` / ``parse_feedback`` and the deployment's
``Limits``: a record the workers would dead-letter raises ``contract.ContractError``
(``.reason`` is the dead letter's reason code, the message its ``error``) before
anything is sent. What only a worker can know is not checked here: whether an
activity's or a feedback's ``item_id`` is in the catalog (``unknown_item``).

Sends are confirmed: ``acks=all``, and each ``send_*`` returns once the broker has
acknowledged the record (a batch: every record of it). Only the standard library,
aiokafka and aiohttp are used.

``docs/client.md`` documents it; ``examples/client_example.py`` runs it against
``stream-app up``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from stream_app import contract
from stream_app.config import Settings
from stream_app.connections import KafkaConfig, kafka_config
from stream_app.contract import ContractError, Limits

__all__ = ["Client", "ClientError", "HTTPError", "ContractError", "Outgoing", "Recommendation",
           "RecommendedItem", "Ranking", "RecommendationStream", "prepare_activity",
           "prepare_item", "prepare_feedback"]

_DEFAULTS = Settings()


class ClientError(Exception):
    """Something between the client and the deployment failed (Kafka or a worker not
    reachable, no ``worker_url`` given)."""


class HTTPError(ClientError):
    """A worker answered an HTTP call with an error status (``status``: 400 a bad ``k``,
    401 a missing or wrong token, 404 unknown path or user, 503 not ready).
    ``body`` is the answer (a dict when it was JSON), ``url`` what was asked."""

    def __init__(self, status: int, body: Any, url: str) -> None:
        detail = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"HTTP {status} from {url}: {detail or str(body)[:200]}")
        self.status = status
        self.body = body
        self.url = url


# --- what is sent ------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One validated record, ready to send: ``value`` are the exact bytes the workers
    will parse, ``event`` the same as a dict (with ``event_id`` / ``ts`` filled in)."""

    topic: str
    key: str
    value: bytes
    event: dict[str, Any]
    timestamp: float  # the record timestamp sent with it, epoch seconds


def _limits(limits: Limits | None) -> Limits:
    return limits if limits is not None else _DEFAULTS.limits()


def _encode(event: Mapping[str, Any]) -> bytes:
    """The bytes a producer sends, as they are: a NaN stays ``NaN`` (which the worker
    rejects), unlike ``contract.dumps``, which writes the app's own outputs."""
    try:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:  # a value JSON cannot hold (a datetime, a set)
        raise ContractError(f"not JSON serializable: {exc}", "invalid_field") from None


def _check(parse: Callable[[contract.Record, Limits], Any], topic: str, event: Mapping[str, Any],
           limits: Limits | None, now: float | None) -> tuple[Any, bytes, float]:
    if not isinstance(event, Mapping):
        raise ContractError(f"not a JSON object: {type(event).__name__}", "not_json")
    now = time.time() if now is None else now
    value = _encode(event)
    record = contract.Record(topic=topic, partition=0, offset=0, timestamp=now, key=None,
                             value=value)
    return parse(record, _limits(limits)), value, now


def _with_defaults(event: Mapping[str, Any], now: float, event_id: bool) -> dict[str, Any]:
    out = dict(event)
    if event_id and out.get("event_id") is None:
        out = {"event_id": str(uuid.uuid4()), **{k: v for k, v in out.items()
                                                 if k != "event_id"}}
    if out.get("ts") is None:
        out["ts"] = now
    return out


def prepare_activity(event: Mapping[str, Any], limits: Limits | None = None,
                     now: float | None = None,
                     topic: str = _DEFAULTS.topic_activity) -> Outgoing:
    """A ``user-activity`` record: ``event_id`` (a uuid4, first) and ``ts`` (``now``, last)
    added when missing or null, then validated with ``contract.parse_activity``; keyed by
    ``user_id``. Raises ``ContractError``."""
    now = time.time() if now is None else now
    if isinstance(event, Mapping):
        event = _with_defaults(event, now, event_id=True)
    parsed, value, now = _check(contract.parse_activity, topic, event, limits, now)
    return Outgoing(topic, parsed.user_id, value, dict(event), now)


def prepare_item(item: Mapping[str, Any], limits: Limits | None = None,
                 now: float | None = None, topic: str = _DEFAULTS.topic_items) -> Outgoing:
    """An ``items`` record, validated with ``contract.parse_item``; keyed by ``item_id``.
    Sent as given: an item without ``ts`` takes the record timestamp (the send time).
    Raises ``ContractError``."""
    parsed, value, now = _check(contract.parse_item, topic, item, limits, now)
    return Outgoing(topic, parsed.item_id, value, dict(item), now)


def prepare_feedback(event: Mapping[str, Any], limits: Limits | None = None,
                     now: float | None = None,
                     topic: str = _DEFAULTS.topic_feedback) -> Outgoing:
    """A ``feedback`` record: ``ts`` (``now``) added when missing or null, validated with
    ``contract.parse_feedback``; keyed by ``user_id``. Raises ``ContractError``."""
    now = time.time() if now is None else now
    if isinstance(event, Mapping):
        event = _with_defaults(event, now, event_id=False)
    parsed, value, now = _check(contract.parse_feedback, topic, event, limits, now)
    return Outgoing(topic, parsed[0].user_id, value, dict(event), now)


def _fields(**fields: Any) -> dict[str, Any]:
    """Keyword arguments as an event, ``None`` left out, in the contract's order."""
    extra = fields.pop("extra")
    return {**{k: v for k, v in fields.items() if v is not None}, **extra}


# --- what is read ------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    reason: str


def _items(raw: Any) -> tuple[RecommendedItem, ...]:
    return tuple(RecommendedItem(str(i.get("item_id")), float(i.get("score", math.nan)),
                                 str(i.get("reason", "")))
                 for i in raw or () if isinstance(i, Mapping))


@dataclass(frozen=True)
class Recommendation:
    """One record of the recommendations topic (docs/contract.md): the ranking emitted
    after activity event ``event_id`` of ``user_id``. Delivery is at least once: the
    same ``recommendation_id`` can arrive again; ``raw`` is the record as decoded."""

    recommendation_id: str
    user_id: str
    event_id: str
    event_ts: float
    items: tuple[RecommendedItem, ...]
    model_version: str
    emitted_at: float
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "Recommendation":
        return cls(recommendation_id=str(value.get("recommendation_id", "")),
                   user_id=str(value.get("user_id", "")),
                   event_id=str(value.get("event_id", "")),
                   event_ts=float(value.get("event_ts") or 0.0),
                   items=_items(value.get("items")),
                   model_version=str(value.get("model_version", "")),
                   emitted_at=float(value.get("emitted_at") or 0.0), raw=dict(value))


@dataclass(frozen=True)
class Ranking:
    """A worker's answer to ``GET /users/{id}/recommendations``: a fresh ranking for the
    user now (a new user: the trending items)."""

    user_id: str
    model_version: str
    items: tuple[RecommendedItem, ...]

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


class RecommendationStream:
    """Recommendations from the recommendations topic, for a set of users or all,
    read outside any consumer group (every partition, nothing committed).

    An async iterator of ``Recommendation`` and an async context manager: entering it
    fixes where reading starts (the end of every partition now, or their beginning with
    ``from_beginning``), so whatever is emitted after ``async with`` returns is seen.
    Iterated without ``async with``, it starts at the first ``__anext__``. ``aclose()``
    (or leaving the ``async with``, or closing the client) stops the consumer. With
    ``idle_timeout``, iteration ends after that many seconds without a matching record.
    A topic that does not exist yet is waited for, then read from its beginning.
    """

    def __init__(self, client: "Client", user_ids: Iterable[str] | None, from_beginning: bool,
                 idle_timeout: float | None) -> None:
        self._client = client
        self._users = None if user_ids is None else {str(u) for u in user_ids}
        self._from_beginning = from_beginning
        self._idle_timeout = idle_timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned = False
        self._closed = False
        self._buffer: deque[Recommendation] = deque()
        self._topic = client.topic_recommendations

    async def __aenter__(self) -> "RecommendationStream":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> "RecommendationStream":
        return self

    async def start(self) -> None:
        if self._consumer is not None or self._closed:
            return
        consumer = AIOKafkaConsumer(**self._client.kafka.client_args(), group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100,
                                    auto_offset_reset="earliest")
        await _start(consumer, self._client.kafka)
        self._consumer = consumer
        self._client._streams.add(self)
        try:
            await self._assign(initial=True)
        except BaseException:
            await self.aclose()
            raise

    async def _assign(self, initial: bool) -> None:
        """Every partition of the topic, from its end now (or its beginning); a topic
        that is not there yet: nothing, and a later call reads it from the beginning."""
        consumer = self._consumer
        assert consumer is not None
        if self._topic not in await consumer.topics():
            return
        partitions = consumer.partitions_for_topic(self._topic) or set()
        if not partitions:
            return
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if self._from_beginning or not initial:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, end)
        self._assigned = True

    def _wanted(self, key: bytes | None, raw: bytes | None) -> Recommendation | None:
        if self._users is not None and key is not None:
            try:
                if key.decode() not in self._users:
                    return None
            except UnicodeDecodeError:
                return None
        try:
            value = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        if self._users is not None and str(value.get("user_id")) not in self._users:
            return None
        try:
            return Recommendation.from_dict(value)
        except (TypeError, ValueError):
            return None

    async def __anext__(self) -> Recommendation:
        if self._consumer is None:
            await self.start()
        last = time.monotonic()
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._closed or self._consumer is None:
                raise StopAsyncIteration
            if not self._assigned:
                await self._assign(initial=False)
                if not self._assigned:
                    await asyncio.sleep(0.5)
            else:
                batch = await self._consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for rec in records:
                        found = self._wanted(rec.key, rec.value)
                        if found is not None:
                            self._buffer.append(found)
            if self._buffer:
                continue
            if self._idle_timeout is not None and time.monotonic() - last > self._idle_timeout:
                raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop reading (idempotent)."""
        self._closed = True
        self._buffer.clear()
        consumer, self._consumer = self._consumer, None
        self._client._streams.discard(self)
        if consumer is not None:
            await consumer.stop()


# --- the client --------------------------------------------------------------------


class Client:
    """A program's handle on a stream_app deployment.

    ``kafka``: a ``KafkaConfig`` (TLS, SASL: ``Settings.kafka()``) or a bootstrap string
    (plaintext). Topic names default to the settings' defaults; ``limits`` (default
    ``Settings().limits()``) are what validation enforces and should be the deployment's.
    ``worker_url`` (e.g. ``http://127.0.0.1:6066``) and ``api_token`` are for the HTTP
    calls (``recommend``, ``interests``, ``stats``). ``from_settings`` / ``from_env``
    take all of it from a deployment's settings.

    Use it as an async context manager (``async with Client(...) as client``), or call
    ``close()``. The producer connects at the first send, the HTTP session at the first
    call, a ``RecommendationStream`` when it starts; ``close()`` closes all of them.
    """

    def __init__(self, kafka: KafkaConfig | str, *,
                 topic_items: str = _DEFAULTS.topic_items,
                 topic_activity: str = _DEFAULTS.topic_activity,
                 topic_feedback: str = _DEFAULTS.topic_feedback,
                 topic_recommendations: str = _DEFAULTS.topic_recommendations,
                 worker_url: str | None = None, api_token: str | None = None,
                 limits: Limits | None = None, http_timeout: float = 30.0) -> None:
        self.kafka = kafka_config(kafka)
        self.topic_items = topic_items
        self.topic_activity = topic_activity
        self.topic_feedback = topic_feedback
        self.topic_recommendations = topic_recommendations
        self.worker_url = worker_url.rstrip("/") if worker_url else None
        self.api_token = api_token or None
        self.limits = _limits(limits)
        self.http_timeout = http_timeout
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._session: Any = None  # aiohttp.ClientSession, made at the first HTTP call
        self._streams: set[RecommendationStream] = set()

    def __repr__(self) -> str:  # never the token
        return (f"Client(kafka={self.kafka!r}, worker_url={self.worker_url!r}, "
                f"api_token={'***' if self.api_token else None})")

    @classmethod
    def from_settings(cls, settings: Settings, worker_url: str | None = None,
                      api_token: str | None = None, **kwargs: Any) -> "Client":
        """Kafka connection, topic names, limits and ``api_token`` of ``settings``."""
        return cls(settings.kafka(), topic_items=settings.topic_items,
                   topic_activity=settings.topic_activity,
                   topic_feedback=settings.topic_feedback,
                   topic_recommendations=settings.topic_recommendations,
                   worker_url=worker_url,
                   api_token=settings.api_token if api_token is None else api_token,
                   limits=settings.limits(), **kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "Client":
        """``from_settings(Settings.from_env())`` with ``worker_url`` from ``WORKER_URL``:
        what ``stream-app up``'s ``export`` line sets (``KAFKA_BOOTSTRAP_SERVERS``,
        ``WORKER_URL``, ...), plus any ``STREAM_APP_*`` (topics, ``STREAM_APP_API_TOKEN``)."""
        environ = os.environ if environ is None else environ
        kwargs.setdefault("worker_url", environ.get("WORKER_URL") or None)
        return cls.from_settings(Settings.from_env(environ), **kwargs)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush and stop the producer, close open recommendation streams and the HTTP
        session (idempotent)."""
        for stream in list(self._streams):
            await stream.aclose()
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.flush()
            finally:
                await producer.stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- sending ---------------------------------------------------------------

    async def _started(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self.kafka.client_args(), acks="all",
                                            linger_ms=5)
                await _start(producer, self.kafka)
                self._producer = producer
            return self._producer

    async def _send(self, records: list[Outgoing]) -> list[dict[str, Any]]:
        if not records:
            return []
        producer = await self._started()
        try:
            pending = [await producer.send(r.topic, r.value, key=r.key.encode(),
                                           timestamp_ms=int(r.timestamp * 1000))
                       for r in records]
            await asyncio.gather(*pending)  # acknowledged by the broker (acks=all)
        except KafkaError as exc:
            raise ClientError(f"sending to {records[0].topic} at {self.kafka.bootstrap} "
                              f"failed: {exc!r}") from exc
        return [r.event for r in records]

    def _prepare_all(self, prepare: Callable[..., Outgoing], events: Iterable[Mapping[str, Any]],
                     topic: str) -> list[Outgoing]:
        """All validated before any is sent: a bad one raises ``ContractError`` naming
        its position (``.index``), nothing of the batch sent."""
        now = time.time()
        out = []
        for n, event in enumerate(events):
            try:
                out.append(prepare(event, self.limits, now, topic))
            except ContractError as exc:
                error = ContractError(f"event {n}: {exc}", exc.reason)
                error.index = n  # type: ignore[attr-defined]
                raise error from exc
        return out

    async def send_activity(self, user_id: str, type: str, item_id: str | None = None, *,
                            text: str | None = None, rating: float | None = None,
                            ts: float | None = None, event_id: str | None = None,
                            **extra: Any) -> dict[str, Any]:
        """One ``user-activity`` event (``type``: view click like purchase rate search text
        dislike skip forget; ``item_id`` and/or ``text``; ``rating`` for ``rate``), keyed by
        ``user_id``. ``event_id`` defaults to a uuid4, ``ts`` to now. Returns the event as
        sent once the broker acknowledged it. Raises ``ContractError`` before sending."""
        event = _fields(event_id=event_id, user_id=user_id, type=type, item_id=item_id,
                        text=text, rating=rating, ts=ts, extra=extra)
        return (await self._send([prepare_activity(event, self.limits,
                                                   topic=self.topic_activity)]))[0]

    async def send_activity_batch(self, events: Iterable[Mapping[str, Any]]
                                  ) -> list[dict[str, Any]]:
        """Activity events as dicts (the contract's fields), all validated first, then
        sent and confirmed together; returns them as sent (``event_id``, ``ts`` filled)."""
        return await self._send(self._prepare_all(prepare_activity, events,
                                                  self.topic_activity))

    async def forget(self, user_id: str, *, event_id: str | None = None,
                     ts: float | None = None) -> dict[str, Any]:
        """A ``forget`` activity event: the workers and the trainer drop everything kept
        about the user as of that point in the user's partition (no recommendation is
        emitted for it)."""
        return await self.send_activity(user_id, contract.FORGET, event_id=event_id, ts=ts)

    async def send_item(self, item_id: str, title: str | None = None, text: str | None = None,
                        tags: list[str] | None = None, *, ts: float | None = None,
                        deleted: bool | None = None, **extra: Any) -> dict[str, Any]:
        """One ``items`` event (at least one of title/text/tags; ``deleted=True`` removes
        the item), keyed by ``item_id``. Returns it as sent. Raises ``ContractError``."""
        item = _fields(item_id=item_id, title=title, text=text, tags=tags, ts=ts,
                       deleted=deleted, extra=extra)
        return (await self._send([prepare_item(item, self.limits, topic=self.topic_items)]))[0]

    async def delete_item(self, item_id: str) -> dict[str, Any]:
        """``{"item_id": ..., "deleted": true}``: every worker drops the item."""
        return await self.send_item(item_id, deleted=True)

    async def send_item_batch(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Items as dicts, all validated first, then sent and confirmed together."""
        return await self._send(self._prepare_all(prepare_item, items, self.topic_items))

    async def send_feedback(self, user_id: str, item_id: str | Sequence[str], type: str, *,
                            rating: float | None = None, recommendation_id: str | None = None,
                            ts: float | None = None, **extra: Any) -> dict[str, Any]:
        """One ``feedback`` event (``type``: click skip like dislike purchase rate;
        ``rating`` for ``rate``; ``recommendation_id`` of the recommendation acted on),
        keyed by ``user_id``; ``ts`` defaults to now. ``item_id`` a list: one record
        naming them all (``item_ids``: e.g. every item of a list the user passed over).
        Raises ``ContractError``."""
        many = isinstance(item_id, (list, tuple))
        event = _fields(user_id=user_id, item_id=None if many else item_id,
                        item_ids=list(item_id) if many else None, type=type, rating=rating,
                        recommendation_id=recommendation_id, ts=ts, extra=extra)
        return (await self._send([prepare_feedback(event, self.limits,
                                                   topic=self.topic_feedback)]))[0]

    async def send_feedback_batch(self, events: Iterable[Mapping[str, Any]]
                                  ) -> list[dict[str, Any]]:
        """Feedback events as dicts, all validated first, then sent and confirmed together."""
        return await self._send(self._prepare_all(prepare_feedback, events,
                                                  self.topic_feedback))

    # --- reading ---------------------------------------------------------------

    def recommendations(self, user_ids: Iterable[str] | None = None,
                        from_beginning: bool = False,
                        idle_timeout: float | None = None) -> RecommendationStream:
        """``Recommendation`` records of ``user_ids`` (None: every user) from the
        recommendations topic, from now on (``from_beginning``: everything still in it).
        Use ``async with client.recommendations(...) as stream: ... async for rec in
        stream`` to send events after reading has started and close it cleanly."""
        if isinstance(user_ids, str):
            user_ids = [user_ids]
        return RecommendationStream(self, user_ids, from_beginning, idle_timeout)

    # --- HTTP ------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        import aiohttp

        if not self.worker_url:
            raise ClientError("no worker_url given: the HTTP calls need a worker's address "
                              "(e.g. WORKER_URL as `stream-app up` prints it)")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.http_timeout))
        url = self.worker_url + path
        headers = {"Accept": "application/json"}
        if self.api_token:
            headers["Authorization"] = f"Bearer {self.api_token}"
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ClientError(f"cannot reach the worker at {self.worker_url}: "
                              f"{exc or type(exc).__name__}") from exc
        try:
            body: Any = json.loads(raw) if "json" in ctype else raw.decode(errors="replace")
        except ValueError:
            body = raw.decode(errors="replace")
        if status >= 400:
            raise HTTPError(status, body, url)
        return body

    @staticmethod
    def _path(user_id: str, what: str) -> str:
        return f"/users/{urllib.parse.quote(str(user_id), safe='')}/{what}"

    async def recommend(self, user_id: str, k: int = 10) -> Ranking:
        """``GET /users/{user_id}/recommendations?k=``: a fresh ranking of ``k`` items
        (``1 <= k <= STREAM_APP_MAX_K``) from the worker at ``worker_url``. Raises
        ``HTTPError`` (``.status``) on an error answer, ``ClientError`` when unreachable."""
        body = await self._get(self._path(user_id, "recommendations"), {"k": str(k)})
        return Ranking(user_id=str(body.get("user_id", user_id)),
                       model_version=str(body.get("model_version", "")),
                       items=_items(body.get("items")))

    async def interests(self, user_id: str) -> dict[str, Any]:
        """``GET /users/{user_id}/interests`` as a dict (a user with none: ``HTTPError``
        404)."""
        return await self._get(self._path(user_id, "interests"))

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``: catalog size (``catalog_items``), model versions, counters."""
        return await self._get("/stats")


async def _start(client: Any, kafka: KafkaConfig) -> None:
    """Start an aiokafka producer or consumer; unreachable Kafka is a ``ClientError``."""
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise ClientError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
