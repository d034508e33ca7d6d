"""The data path of a micro-batch: parse -> vectors -> state update -> rank -> emit.

Kafka-free on purpose: the Faust agents hand records in and send what comes out,
and the in-process evaluation drives the same code.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import (FORGET, ActivityEvent, ContractError, FeedbackEvent,
                                 ItemEvent, Record, dead_letter, parse_activity,
                                 parse_feedback, parse_item, recommendation)
from stream_app.encoder import CachedEncoder, Encoder
from stream_app.faults import EncoderError, is_infrastructure
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.model.covisit import Choice
from stream_app.model.interest import (CHOICES, UserState, apply_event, event_weight,
                                       forgotten_ids)
from stream_app.model.popularity import NOT_POPULAR
from stream_app.model.scoring import Parts, parts, rank_parts
from stream_app.store import Store, UserRecord, UserWrite, Written, new_token, text_key


@dataclass(frozen=True)
class Rejected:
    """A record that goes to dead letters: why (a message and a ``contract.REASONS`` code)."""

    record: Record
    error: str
    reason: str

    def letter(self, payload_bytes: int) -> tuple[bytes | None, dict[str, Any]]:
        """(key, value) of its dead letter, holding at most ``payload_bytes`` of the value."""
        return self.record.key, dead_letter(self.record, self.error, self.reason, payload_bytes)


@dataclass
class Outputs:
    """What a batch produces: records to send and counts to publish."""

    recommendations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def reject(self, record: Record, error: str | ContractError, reason: str = "") -> None:
        if isinstance(error, ContractError):
            error, reason = str(error), error.reason
        self.rejected.append(Rejected(record, error, reason or "invalid_field"))
        self.counts["dead_letters"] += 1

    def extend(self, other: "Outputs") -> None:
        self.recommendations += other.recommendations
        self.rejected += other.rejected
        self.counts.update(other.counts)


async def isolate(process: Callable[[Sequence[Record]], Awaitable[Outputs]],
                  records: Sequence[Record]) -> Outputs:
    """After a batch failed unexpectedly: one record at a time, the culprit to dead letters.

    An infrastructure fault (``faults``) on any record fails the whole batch again, to be
    retried: a record goes to dead letters only for a failure of its own. Safe to repeat:
    user state skips events it already applied.
    """
    merged = Outputs()
    for rec in records:
        try:
            merged.extend(await process([rec]))
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop the worker
            if is_infrastructure(exc):
                raise
            merged.reject(rec, f"processing failed: {exc!r}", "processing_failed")
    return merged


@dataclass
class _Pending:
    """One valid activity event with the vector it contributes."""

    record: Record
    event: ActivityEvent
    vector: np.ndarray
    source: str  # what shaped the interest: the item id, or "text:<the text>"


@dataclass
class _Folded:
    """One user's events of a batch, folded (``Processor._fold``)."""

    snapshots: list["Snapshot"] = field(default_factory=list)
    write: UserWrite | None = None
    applied: int = 0
    rewound: int = 0  # applied from below an offset already applied
    forgotten: int = 0


@dataclass
class Snapshot:
    """The user around one event: interests before it (what the trainer learns from),
    interests after it (what is ranked with) and items to leave out."""

    pending: _Pending
    before: UserState
    state: UserState
    exclude: frozenset[str]
    applied: bool  # False for a duplicate or replayed event


class Calls:
    """What a batch owes one shared count (popularity, co-visits, history), as calls each
    made once: a call that failed keeps its token, so its retry, which Redis may already
    have run with the reply lost on the way back, adds nothing twice; what is owed after
    a call was tried goes in a call of its own."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self._open = False  # the last call takes more (not tried yet)

    def __bool__(self) -> bool:
        return bool(self.calls)

    def add(self, items: Sequence[Any]) -> None:
        if not items:
            return
        if self._open:
            self.calls[-1][1].extend(items)
        else:
            self.calls.append((new_token(), list(items)))
            self._open = True

    async def make(self, call: Callable[[str, list[Any]],
                                        Awaitable[tuple[list[Any], Exception | None]]]
                   ) -> None:
        """``call(token, items)`` for each call in turn, struck once made. It raises when
        nothing went through, or returns the items it could not send with the error
        (those stay owed under the same token, and the error is raised)."""
        self._open = False
        while self.calls:
            token, items = self.calls[0]
            left, error = await call(token, items)
            if error is not None:
                self.calls[0] = (token, left)
                raise error
            self.calls.pop(0)


@dataclass
class Owed:
    """What a batch's applied events still have to add to the shared counts."""

    popular: Calls = field(default_factory=Calls)  # (item, weight, ts) increments
    choices: Calls = field(default_factory=Calls)  # co-visits
    history: Calls = field(default_factory=Calls)  # (user, snapshot) entries
    applied: int = 0  # events this batch applied, over all its attempts
    # the snapshot of each event this batch applied, by its record's place in the log
    snapshots: dict[tuple[str, int, int], "Snapshot"] = field(default_factory=dict)
    # places whose history entries were taken (they are in ``history`` or were appended)
    historied: set[tuple[str, int, int]] = field(default_factory=set)
    observed: bool = False  # the trainer took this batch's examples
    # users whose write was sent without an answer (an error, a lost compare-and-set):
    # its token and what it applied; a later read that finds the token booked them
    tentative: dict[str, tuple[str, "_Folded"]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.applied or self.popular or self.choices or self.history
                    or self.tentative or self.observed)

    def add(self, popular: list[tuple[str, float, float]],
            chosen: list[Choice], applied: int,
            snapshots: Sequence["Snapshot"] = ()) -> None:
        self.popular.add(popular)
        self.choices.add(chosen)
        self.applied += applied
        self.snapshots.update((place(s.pending.record), s) for s in snapshots if s.applied)

    def as_applied(self, snapshots: Sequence["Snapshot"]) -> list["Snapshot"]:
        """``snapshots`` of a retry, each event an earlier attempt applied (which the retry
        finds a duplicate) in the snapshot it had when applied."""
        return [self.snapshots.get(place(s.pending.record), s) if not s.applied else s
                for s in snapshots]


def place(record: Record) -> tuple[str, int, int]:
    """Where a record sits in the log: a batch's records' places key what it owes."""
    return record.topic, record.partition, record.offset


# takes a batch's outputs as soon as it is ranked (``Processor.process_activity``)
Early = Callable[[Outputs], Awaitable[None]]

MAX_OWED_BATCHES = 256  # failed batches whose counts a worker keeps for their retry


class OwedBatches:
    """What failed attempts of batches still owe, by the batch's records (``place``), for
    the batch's retry; past ``most`` batches the oldest is dropped (a batch whose retry
    never comes: its partition went to another worker)."""

    def __init__(self, most: int = MAX_OWED_BATCHES) -> None:
        self.most = most
        self._by_batch: dict[tuple[tuple[str, int, int], ...], Owed] = {}

    @staticmethod
    def key(records: Sequence[Record]) -> tuple[tuple[str, int, int], ...]:
        return tuple(place(r) for r in records)

    def take(self, key: tuple[tuple[str, int, int], ...]) -> Owed:
        """What an earlier attempt of this batch left owed (nothing on a first attempt)."""
        return self._by_batch.pop(key, None) or Owed()

    def keep(self, key: tuple[tuple[str, int, int], ...], owed: Owed) -> None:
        """After a failed attempt: its retry takes ``owed`` (when it owes anything)."""
        if not owed:
            return
        self._by_batch[key] = owed
        while len(self._by_batch) > self.most:
            del self._by_batch[next(iter(self._by_batch))]


class Processor:
    """Holds the worker's encoder, catalog and store; one method per input topic."""

    def __init__(self, settings: Settings, store: Store, encoder: Encoder, catalog: Catalog,
                 metrics: Metrics) -> None:
        self.s = settings
        self.limits = settings.limits()  # what an input record may hold
        self.defaults = settings.defaults()  # the score's weights a blend leaves open
        self.store = store
        self.encoder = encoder
        self.text_encoder = CachedEncoder(encoder, settings.text_cache_size)
        self.catalog = catalog
        self.metrics = metrics
        self.weights = settings.event_weights()
        self.params = settings.interest_params()
        self._owed = OwedBatches()

    @property
    def model_version(self) -> str:
        """The version that ranks (text vectors always come from the base encoder)."""
        return self.catalog.adapter.version

    # --- items --------------------------------------------------------------
    async def process_items(self, records: Sequence[Record]) -> Outputs:
        out = Outputs()
        latest: dict[str, ItemEvent] = {}
        for rec in records:
            try:
                item = parse_item(rec, self.limits, self.encoder.dim)
            except ContractError as exc:
                out.reject(rec, exc)
                continue
            latest[item.item_id] = item  # same key, same partition: the last one wins
        upserts = [i for i in latest.values() if not i.deleted]
        deletes = [i.item_id for i in latest.values() if i.deleted]
        # an item's own vector (unit length, as the encoder's) instead of encoding its text
        texts = await self._item_text_vectors([i.embed_text() for i in upserts
                                               if i.vector is None])
        given = iter(texts)
        vectors = [next(given) if i.vector is None else _unit(i.vector) for i in upserts]
        self.catalog.serve()
        await self.store.put_items(
            self.encoder.version,
            [(i.item_id, vec, {"title": i.title, "tags": list(i.tags), "ts": i.ts})
             for i, vec in zip(upserts, vectors)],
            deletes)
        self.catalog.upsert((i.item_id, v) for i, v in zip(upserts, vectors))
        self.catalog.remove(deletes)
        for i in upserts:  # an item without a title is shown by its id (not kept)
            if i.title:
                self.catalog.titles[i.item_id] = i.title
            else:
                self.catalog.titles.pop(i.item_id, None)
        out.counts["items_upserted"] += len(upserts)
        out.counts["items_with_vectors"] += sum(i.vector is not None for i in upserts)
        out.counts["items_deleted"] += len(deletes)
        return out

    async def _item_text_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """Content-addressed: an item re-sent with the same text costs no model call."""
        keys = [text_key(t) for t in texts]
        cached = await self.store.text_vectors(self.encoder.version, keys)
        todo = list(dict.fromkeys(k for k in keys if k not in cached))
        if todo:
            by_key = dict(zip(keys, texts))
            fresh = encode(self.encoder, [by_key[k] for k in todo])
            self.metrics.encoded.inc(len(todo))
            new = dict(zip(todo, fresh))
            await self.store.put_text_vectors(self.encoder.version, new)
            cached.update(new)
        return [cached[k] for k in keys]

    # --- feedback -------------------------------------------------------------
    async def process_feedback(self, records: Sequence[Record]) -> Outputs:
        out = Outputs()
        out.counts["feedback"] += len(await self.valid_feedback(records, out))
        return out

    async def valid_feedback(self, records: Sequence[Record], out: Outputs
                             ) -> list[FeedbackEvent]:
        """The records' valid feedback on known items; the rest to ``out.rejected``. A
        record naming several items (``item_ids``) gives one event per known item; with
        unknown ones among them it also goes to the dead letters, saying which."""
        parsed = []
        for rec in records:
            try:
                parsed.append((rec, parse_feedback(rec, self.limits)))
            except ContractError as exc:
                out.reject(rec, exc)
        known = await self.catalog.resolve(fb.item_id for _, events in parsed for fb in events)
        for rec, events in parsed:
            unknown = [fb.item_id for fb in events if fb.item_id not in known]
            if len(events) == 1 and unknown:
                out.reject(rec, f"unknown item {unknown[0]!r}", "unknown_item")
            elif unknown:
                out.reject(rec, f"unknown items {unknown} (the other {len(events) - len(unknown)}"
                           " were taken)", "unknown_item")
        return [fb for _, events in parsed for fb in events if fb.item_id in known]

    # --- activity -------------------------------------------------------------
    async def process_activity(self, records: Sequence[Record],
                               early: Early | None = None) -> Outputs:
        """Apply, rank, then count. When counting fails after the state was written, the
        retried batch finds its events applied (duplicates) and counts what the failed
        attempt owed instead (kept here by the batch's offsets).

        ``early``, when given, gets the outputs as soon as the batch is ranked, before the
        counts: a worker sends the recommendations on while it counts. A retry after a
        failed count hands them over again (recommendations are at least once)."""
        out = Outputs()
        key = OwedBatches.key(records)
        owed = self._owed.take(key)
        try:
            # events a failed attempt applied are ranked (and kept) as they were applied
            snapshots = owed.as_applied(await self.apply_activity(records, out, owed))
            ranked = self._rank(snapshots, out)
            if self.s.user_history > 0:
                fresh = [s for s in snapshots if place(s.pending.record) not in owed.historied]
                owed.history.add(self._history(fresh, ranked))
                owed.historied.update(place(s.pending.record) for s in fresh if s.applied)
            if early is not None:
                await early(out)
            # counted after ranking: no event is ranked with popularity or co-visits it caused
            await self.count(owed)
        except Exception:
            self._owed.keep(key, owed)
            raise
        earlier = owed.applied - out.counts["applied"]  # applied by a failed attempt
        out.counts["applied"] += earlier
        out.counts["duplicates"] -= earlier
        return out

    async def apply_activity(self, records: Sequence[Record], out: Outputs, owed: "Owed"
                             ) -> list[Snapshot]:
        """Parse, fold into user state (compare-and-set). ``owed`` gets each user's counts
        (popularity increments, choices) as soon as their write went through, so that when
        a later write fails, the retry (which finds those events applied) still counts them."""
        events: list[tuple[Record, ActivityEvent]] = []
        for rec in records:
            try:
                events.append((rec, parse_activity(rec, self.limits)))
            except ContractError as exc:
                out.reject(rec, exc)
        pending = await self._with_vectors(events, out)
        return await self._apply(pending, out, owed)

    async def count(self, owed: "Owed", share: bool = True) -> None:
        """Popularity increments, then co-visits (``share``: logged for the other workers
        too; the trainer keeps its own), then history; each call (each popularity shard)
        is struck from ``owed`` once done and a retried one carries its token, so nothing
        counts twice: not after a failure in between, not when Redis ran a call whose
        reply was lost."""
        shard = self.store.popularity_shard

        async def popular(token: str, increments: list) -> tuple[list, Exception | None]:
            failed = await self.store.count_popularity(increments,
                                                       self.s.popularity_half_life_s, token)
            self.catalog.popularity.add(p for p in increments if shard(p[0]) not in failed)
            return ([p for p in increments if shard(p[0]) in failed],
                    next(iter(failed.values()), None))

        async def covisits(token: str, chosen: list) -> tuple[list, None]:
            await self.catalog.count_covisits(chosen, share, token)
            return [], None

        async def history(token: str, entries: list) -> tuple[list, None]:
            await self.store.append_history(entries, self.s.user_history, self.s.user_ttl_s)
            return [], None

        await owed.popular.make(popular)
        await owed.choices.make(covisits)
        await owed.history.make(history)

    async def _with_vectors(self, events: list[tuple[Record, ActivityEvent]],
                            out: Outputs) -> list[_Pending]:
        """Item vectors from the catalog, free text through the model in one batch."""
        item_vecs = await self.catalog.resolve(e.item_id for _, e in events if e.item_id)
        texts = list(dict.fromkeys(e.text for _, e in events if e.text))
        text_vecs = dict(zip(texts, encode(self.text_encoder, texts))) if texts else {}
        pending = []
        for rec, ev in events:
            if ev.item_id is not None and ev.item_id not in item_vecs:
                out.reject(rec, f"unknown item {ev.item_id!r}", "unknown_item")
                continue
            parts = [v for v in (item_vecs.get(ev.item_id) if ev.item_id else None,
                                 text_vecs.get(ev.text) if ev.text else None) if v is not None]
            if not parts:  # a forget event: nothing to add
                pending.append(_Pending(rec, ev, np.zeros(self.encoder.dim, np.float32), ""))
                continue
            vec = np.mean(parts, axis=0)
            source = ev.item_id if ev.item_id is not None else f"text:{ev.text}"
            pending.append(_Pending(rec, ev, vec / max(float(np.linalg.norm(vec)), 1e-12),
                                    source))
        return pending

    async def _apply(self, pending: list[_Pending], out: Outputs, owed: "Owed"
                     ) -> list[Snapshot]:
        """Fold each user's events into their state; compare-and-set until no writer raced.
        When some users' writes failed, the others' are booked in ``owed``, then the first
        failure is raised (the batch is retried)."""
        by_user: dict[str, list[_Pending]] = {}
        for p in pending:
            by_user.setdefault(p.event.user_id, []).append(p)
        snapshots: dict[int, Snapshot] = {}

        def book(uid: str, f: _Folded, ranked: list[Snapshot]) -> None:
            snapshots.update((id(s.pending), s) for s in ranked)
            out.counts["applied"] += f.applied
            out.counts["rewound"] += f.rewound
            out.counts["forgotten"] += f.forgotten
            out.counts["duplicates"] += len(by_user[uid]) - f.applied
            owed.add(f.write.popular if f.write is not None else [], choices(f.snapshots),
                     f.applied, f.snapshots)

        todo = list(by_user)
        attempt = 0
        while todo:
            # users a write of ours left as we know them come from our copy, checked by the
            # compare-and-set; a user whose last write is in doubt was dropped from it
            current = await self.store.read_users(todo, known=True)
            token = new_token()
            folded = {}
            unchecked = []  # from the copy with nothing to write: no write checks it
            for uid in todo:
                f = self._fold(uid, by_user[uid], current[uid], token)
                if f.write is None and current[uid].known:
                    unchecked.append(uid)
                    continue
                sent = owed.tentative.pop(uid, None)
                if sent is not None and current[uid].writer == sent[0]:
                    # a write whose answer was lost went through: what it applied is owed
                    # (ranked as this read finds the user: the same states)
                    book(uid, sent[1], f.snapshots)
                else:
                    folded[uid] = f
            # a redelivery the copy says is applied: read the user (Redis may have lost it)
            self.store.known.drop(unchecked)
            writes = [f.write for f in folded.values() if f.write is not None]
            try:
                written = await self.store.write_users(writes, self.s.seen_max) if writes \
                    else Written([], {})
            except Exception:
                owed.tentative.update((uid, (token, f)) for uid, f in folded.items()
                                      if f.write is not None)
                raise
            # not written as far as the answer says; a retry sent by the client itself
            # answers "lost" for a write its first try made: the next read tells
            unsure = set(written.lost) | set(written.failed)
            owed.tentative.update((uid, (token, folded[uid])) for uid in unsure)
            for uid, f in folded.items():
                if uid not in unsure:
                    book(uid, f, f.snapshots)
            if written.failed:
                raise next(iter(written.failed.values()))
            # a copy gone stale (another writer, expiry) is read again at once; a race
            # with a live writer backs off
            stale = [uid for uid in written.lost if current[uid].known]
            raced = len(written.lost) - len(stale)
            self.metrics.user_cache_stale.inc(len(stale))
            if raced:
                attempt += 1
                self.metrics.cas_conflicts.inc(raced)
                log("cas_conflict", users=raced, attempt=attempt)
                await asyncio.sleep(min(0.01 * 2 ** attempt, 1.0))
            todo = [uid for uid in todo if uid in written.lost or uid in unchecked]
        return [snapshots[id(p)] for p in pending]

    def _fold(self, uid: str, items: list[_Pending], record: UserRecord, token: str = ""
              ) -> "_Folded":
        """The user's events folded in order into a state to write back; a ``forget``
        starts the user over (nothing kept from before it)."""
        state = record.state
        seen = set(record.seen)
        f = _Folded()
        new_seen: list[tuple[str, float]] = []
        popular: list[tuple[str, float, float]] = []
        reset = False
        for p in items:
            ev = p.event
            before = state
            fresh = not state.is_applied(ev)
            if fresh and ev.type == FORGET:
                # nothing but the latest event ids stays: a redelivery is still recognised
                state = UserState(recent_ids=forgotten_ids(state, ev, self.params))
                seen, new_seen, reset = set(), [], True  # counts keep what it added
                f.forgotten += 1
            elif fresh:
                f.rewound += state.rewound(ev)
                weight = event_weight(ev, self.weights, self.s.rating_neutral)
                state = apply_event(state, ev, p.vector, weight, p.source, self.params)
                if ev.item_id:
                    new_seen.append((ev.item_id, ev.ts))
                    seen.add(ev.item_id)
                    if ev.type not in NOT_POPULAR:
                        popular.append((ev.item_id, 1.0, ev.ts))
            f.applied += fresh
            f.snapshots.append(Snapshot(p, before, state, frozenset(seen) if self.s.exclude_seen
                                        else frozenset(), fresh))
        if f.applied:
            f.write = UserWrite(uid, record.version, state, new_seen, popular, reset,
                                self.s.forget_tombstone_s if reset and not state.n_events
                                else self.s.user_ttl_s, token, record.writer)
        return f

    def _rank(self, snapshots: list[Snapshot], out: Outputs
              ) -> list[tuple[Snapshot, list[tuple[str, float, str]]]]:
        """One matrix product per part of the score for the whole batch (``scoring``);
        returns each ranked snapshot with its list.

        No await in here: one model version and one catalog state rank the whole batch.
        """
        snapshots = [s for s in snapshots if s.pending.event.type != FORGET]  # no list
        now = time.time()
        at = max((s.pending.event.ts for s in snapshots), default=0.0)
        lists = self._ranked([s.state for s in snapshots], [s.exclude for s in snapshots],
                             [s.pending.event.ts for s in snapshots], at, self.s.top_k)
        for s, items in zip(snapshots, lists):
            ev = s.pending.event
            out.recommendations.append(
                (ev.user_id, recommendation(ev, items, self.model_version, now)))
            self.metrics.lag_seconds.observe(max(0.0, now - s.pending.record.timestamp))
        out.counts["recommendations"] += len(snapshots)
        return list(zip(snapshots, lists))

    def _history(self, snapshots: Sequence[Snapshot],
                 ranked: Sequence[tuple[Snapshot, list[tuple[str, float, str]]]]
                 ) -> list[tuple[str, dict[str, Any]]]:
        """(user, compact snapshot) of every applied event but a ``forget``, in event order;
        a forget drops the user's snapshots before it (its write emptied the history)."""
        lists = {id(s): items for s, items in ranked}
        entries: list[tuple[str, dict[str, Any]]] = []
        for s in snapshots:
            ev = s.pending.event
            if not s.applied:
                continue
            if ev.type == FORGET:
                entries = [e for e in entries if e[0] != ev.user_id]
                continue
            strengths = s.state.strengths(ev.ts, self.params)
            entry: dict[str, Any] = {
                "ts": ev.ts, "id": ev.event_id, "type": ev.type,
                # per interest slot: strength now, what shaped it, opened by this event
                "i": [[round(float(x), 4), self._kept_source(i.source),
                       int(i.long == i.short == i.source_weight
                           and all(i is not b for b in s.before.interests))]
                      for i, x in zip(s.state.interests, strengths)],
                "top": [[item_id, round(float(score), 4)] for item_id, score, _ in
                        lists[id(s)]]}
            if ev.item_id is not None:
                entry["item"] = ev.item_id
            if ev.text:
                entry["text"] = ev.text[:60] if self.s.show_user_text else ""
            entries.append((ev.user_id, entry))
        return entries

    def _kept_source(self, source: str) -> str:
        """What shaped an interest as the history keeps it: the item id, or the user's text
        (its start, and only with ``show_user_text``)."""
        if source.startswith("text:"):
            return source[:65] if self.s.show_user_text else "text:"
        return source

    def recommend(self, record: UserRecord, k: int) -> list[tuple[str, float, str]]:
        """A fresh ranking for one user (HTTP), as of the user's last event."""
        at = record.state.last_ts or time.time()
        exclude = record.seen if self.s.exclude_seen else frozenset()
        return self._ranked([record.state], [exclude], [at], at, k)[0]

    def _ranked(self, states: Sequence[UserState], excludes: Sequence[frozenset[str]],
                times: Sequence[float], at: float, k: int
                ) -> list[list[tuple[str, float, str]]]:
        """Each state's top k as (item id, score, reason): interests' strengths as of each
        of ``times``, the popularity prior as of ``at``, the version in use. A large
        catalog (``ann_min_items``) re-scores each event's candidates instead of every
        item, with the same ``parts`` and ``rank_parts``."""
        index = self.catalog.index
        if not len(index):
            return [[] for _ in states]
        self.catalog.serve()
        adapter = self.catalog.adapter
        histories = [index.rows_of(st.recent_item_ids()) for st in states]
        directions = [np.stack([i.direction() for i in st.interests]) if st.interests
                      else np.zeros((0, index.dim), np.float32) for st in states]
        strengths = [st.strengths(t, self.params) for st, t in zip(states, times)]
        rows = [index.rows_of(ex) for ex in excludes]
        if self.catalog.large:
            lists = self._rank_candidates(states, directions, histories, strengths, rows, at, k)
        else:
            covisit = self.catalog.covisit_scores([st.recent_item_ids() for st in states])
            p = parts(adapter, index.matrix, self.catalog.ranking.matrix,
                      self.catalog.prior_rows.prior(at), directions, histories,
                      covisit, with_sequence=adapter.ranks_by_sequence)
            lists = rank_parts(p, adapter.blend, self.defaults, strengths, rows, k)
        interest_weight = self.defaults.weights(adapter.blend).interest
        out = []
        for st, strength, history, ranked in zip(states, strengths, histories, lists):
            order = {n: r for r, n in enumerate(np.argsort(-strength, kind="stable"))}
            after = index.ids[history[-1]] if history and not adapter.is_base else None
            # a version that gives interests no weight ranks by sequence and prior alone
            out.append([(index.ids[row], score,
                         self._reason(st.interests, interest if interest_weight > 0
                                      else -1, order, after))
                        for row, score, interest in ranked])
        return out

    def _rank_candidates(self, states: Sequence[UserState], directions: list[np.ndarray],
                         histories: list[list[int]], strengths: list[np.ndarray],
                         excluded: list[list[int]], at: float, k: int
                         ) -> list[list[tuple[int, float, int]]]:
        """``rank_parts`` over each event's candidates (``Catalog.candidates``, and the
        items co-visited with its latest ones) instead of every item: the same parts,
        restricted to those columns; returns (catalog row, score, interest) lists."""
        catalog = self.catalog
        index, ranking, adapter = catalog.index, catalog.ranking, catalog.adapter
        defaults = self.defaults
        blend = adapter.blend
        w_pop = defaults.weights(blend).popularity
        b = len(states)
        queries = None
        if adapter.ranks_by_sequence:  # from the history items' vectors alone
            used = sorted({r for h in histories for r in h})
            at_of = {r: n for n, r in enumerate(used)}
            queries = (adapter.sequence_queries([[at_of[r] for r in h] for h in histories],
                                                ranking.rows_f32(used)) if used
                       else np.zeros((b, ranking.dim), np.float32))

        def prior_of(rows: np.ndarray) -> np.ndarray:
            ids = index.ids
            return catalog.popularity.prior([ids[r] for r in rows.tolist()], at)

        params = catalog.ann
        count = params.candidates + min(max((len(r) for r in excluded), default=0),
                                        params.candidates)
        found = catalog.candidates(directions, queries, prior_of, w_pop, blend.sequence, count)
        # co-visits: the items with counts, scored as over the whole catalog (a row's
        # ``keep`` best of every item), each row's non-zero ones among its candidates
        known_rows, known_at = catalog.covisit_rows.known()
        known = len(known_rows) > 0
        if known:
            scores = catalog.covisits.scores([st.recent_item_ids() for st in states], None,
                                             item_rows=known_at)
        cols, covisit_at = [], []
        for n in range(b):
            extra = np.flatnonzero(scores[n]) if known else np.zeros(0, np.int64)
            row_cols = np.union1d(found[n], known_rows[extra]) if len(extra) else found[n]
            cols.append(row_cols)
            covisit_at.append((np.searchsorted(row_cols, known_rows[extra]), scores[n][extra])
                              if len(extra) else None)
        union = np.unique(np.concatenate(cols)) if b else np.zeros(0, np.int64)
        prior_union = prior_of(union)
        width = max(1, max((len(c) for c in cols), default=1))
        # each event's parts written into rows of batch arrays, padded to the widest
        n_dirs = [len(d) for d in directions]
        sims = np.zeros((sum(n_dirs), width), np.float32)
        priors = np.zeros((b, width), np.float32)
        covs = np.zeros((b, width), np.float32)
        seq: np.ndarray | None = None  # no sequence part: None, as ``parts`` gives
        first = np.cumsum([0, *n_dirs])
        bars = []
        for n in range(b):
            c = cols[n]
            text = index.rows_f32(c)
            cov = np.zeros((1, len(c)), np.float32)
            if covisit_at[n] is not None:
                cov[0, covisit_at[n][0]] = covisit_at[n][1]
            p = parts(adapter, text, ranking.rows_f32(c) if ranking is not index else text,
                      prior_union[np.searchsorted(union, c)], [directions[n]], [histories[n]],
                      cov, None if queries is None else queries[n:n + 1],
                      with_sequence=adapter.ranks_by_sequence)
            m = len(c)
            sims[first[n]:first[n + 1], :m] = p.sims
            priors[n, :m] = p.prior
            covs[n, :m] = p.covisit[0]
            if p.sequence is not None:
                if seq is None:
                    seq = np.zeros((b, width), np.float32)
                seq[n, :m] = p.sequence[0]
            ex = np.asarray(excluded[n], np.int64)
            at_ex = np.searchsorted(c, ex)
            hit = at_ex < len(c)
            hit[hit] = c[at_ex[hit]] == ex[hit]
            bars.append([*at_ex[hit].tolist(), *range(len(c), width)])
        batch = Parts(seq, priors, sims, n_dirs, covs)
        ranked = rank_parts(batch, blend, defaults, strengths, bars, k)
        return [[(int(c[pos]), score, interest) for pos, score, interest in lists]
                for c, lists in zip(cols, ranked)]

    def quoted(self, source: str) -> str:
        """A user's own text as outputs may show it (``show_user_text``)."""
        return f'you said "{source[5:65]}"' if self.s.show_user_text else "what you wrote"

    def _reason(self, interests: tuple, interest: int, order: dict[int, int],
                after: str | None) -> str:
        if interest < 0:
            if after is not None:
                return f'picked next after "{self.catalog.titles.get(after, after)}"'
            return "trending"
        source = interests[interest].source
        label = (self.quoted(source) if source.startswith("text:")
                 else f'"{self.catalog.titles.get(source, source)}"')
        return f"interest {order[interest] + 1} of {len(interests)}: {label}"


def _unit(vector: Sequence[float]) -> np.ndarray:
    vec = np.asarray(vector, np.float32)
    return vec / max(float(np.linalg.norm(vec)), 1e-12)


def encode(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """The model's vectors; its failure is the infrastructure's (``EncoderError``: the
    batch is retried), not the records'."""
    try:
        return encoder.encode(texts)
    except Exception as exc:  # noqa: BLE001 - out of memory, a broken runtime
        raise EncoderError(f"encoding {len(texts)} texts failed: {exc!r}") from exc


def choices(snapshots: Sequence[Snapshot]) -> list[Choice]:
    """(the items chosen before, the item chosen, when, when those were) of every newly
    applied choice."""
    return [Choice(snap.before.recent_item_ids(), snap.pending.event.item_id,
                   snap.pending.event.ts, tuple(map(itemgetter(1), snap.before.recent_items)))
            for snap in snapshots
            if snap.applied and snap.pending.event.item_id is not None
            and snap.pending.event.type in CHOICES]
