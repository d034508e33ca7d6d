"""The trainer: feedback and activity in, examples out, examples into model versions.

It keeps its own replica of every user's interest state (Redis, scope ":trainer"),
built by the workers' own code from the same activity stream, so an example holds
the interests a user had *before* the choice it records, never later ones. A round
trains on earlier examples only and is judged on the newest window it holds out.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import ContractError, FeedbackEvent, Record, parse_feedback
from stream_app.encoder import Encoder
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.model.adapter import Adapter
from stream_app.model.interest import UserState
from stream_app.model.objective import Example, ItemTable, fit, score
from stream_app.model.rounds import RoundPolicy, split_holdout
from stream_app.pipeline import Outputs, Processor
from stream_app.store import Store
from stream_app.versions import Registry

# Implicit positives: activity that consumed an item. Explicit ones: feedback below.
CHOICES = frozenset({"view", "click", "like", "purchase", "rate"})
POSITIVE_FEEDBACK = frozenset({"click", "like", "purchase"})
NEGATIVE_FEEDBACK = frozenset({"skip", "dislike"})
MAX_NEGATIVES = 50  # hard negatives kept per user until their next choice
MAX_USERS_TRACKED = 100_000  # users with pending hard negatives / recent clicks


class Trainer:
    def __init__(self, settings: Settings, store: Store, encoder: Encoder, catalog: Catalog,
                 registry: Registry, metrics: Metrics) -> None:
        self.s = settings
        self.store = store
        self.catalog = catalog
        self.registry = registry
        self.metrics = metrics
        self.processor = Processor(settings, store, encoder, catalog, metrics)
        self.policy = RoundPolicy(settings.trainer_batch_size, settings.trainer_max_wait_s)
        self.pending: list[Example] = []
        self.pending_since: float | None = None
        self.buffer: deque[Example] = deque(maxlen=settings.trainer_buffer_size)
        self.current = Adapter.base(registry.base_version)
        self._negatives: OrderedDict[str, list[str]] = OrderedDict()
        self._clicked: OrderedDict[str, set[str]] = OrderedDict()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.catalog.load()
        self.current = await self.registry.load(await self.registry.current())

    # --- examples ---------------------------------------------------------------
    async def observe(self, records: Sequence[Record]) -> Outputs:
        """Feedback first (skips wait for the user's next choice), then activity."""
        out = Outputs()
        feedback = [r for r in records if r.topic == self.s.topic_feedback]
        activity = [r for r in records if r.topic != self.s.topic_feedback]
        await self._feedback(feedback, out)
        snapshots, popular = await self.processor.apply_activity(activity, out)
        await self.processor.count_popularity(popular)
        for snap in snapshots:
            ev = snap.pending.event
            if not snap.applied or ev.item_id is None:
                continue
            if ev.type in NEGATIVE_FEEDBACK:
                self._remember_negative(ev.user_id, ev.item_id)
            elif ev.type in CHOICES and not self._was_clicked(ev.user_id, ev.item_id):
                self._add(ev.user_id, ev.item_id, ev.ts, snap.before,
                          snap.exclude - {ev.item_id})
        out.counts["examples"] = len(self.pending)
        return out

    async def _feedback(self, records: Sequence[Record], out: Outputs) -> None:
        events: list[FeedbackEvent] = []
        for rec in records:
            try:
                events.append(parse_feedback(rec, self.s.max_record_bytes))
            except ContractError:
                out.counts["feedback_invalid"] += 1  # the workers dead-letter it
        known = await self.catalog.resolve(fb.item_id for fb in events)
        events = [fb for fb in events if fb.item_id in known]
        for fb in events:
            if fb.type in NEGATIVE_FEEDBACK or (fb.type == "rate" and fb.rating is not None
                                                and fb.rating < self.s.rating_neutral):
                self._remember_negative(fb.user_id, fb.item_id)
        chosen = [fb for fb in events if fb.type in POSITIVE_FEEDBACK or (
            fb.type == "rate" and fb.rating is not None and fb.rating >= self.s.rating_neutral)]
        if not chosen:
            return
        users = await self.store.read_users(list({fb.user_id for fb in chosen}))
        for fb in chosen:
            record = users[fb.user_id]
            if fb.item_id in record.seen:  # its activity came first and made the example
                continue
            self._add(fb.user_id, fb.item_id, fb.ts, record.state, record.seen - {fb.item_id})
            self._clicked.setdefault(fb.user_id, set()).add(fb.item_id)
            self._clicked.move_to_end(fb.user_id)
            _trim(self._clicked)
        out.counts["feedback_choices"] += len(chosen)

    def _add(self, user_id: str, item_id: str, ts: float, state: UserState,
             seen: frozenset[str]) -> None:
        if state.interests:
            interests = np.stack([i.direction() for i in state.interests]).astype(np.float16)
        else:
            interests = np.zeros((0, self.catalog.index.dim), np.float16)
        negatives = tuple(self._negatives.pop(user_id, ()))
        self.pending.append(Example(ts, user_id, interests,
                                    state.strengths(ts, self.processor.params).astype(np.float32),
                                    item_id, negatives, seen))
        self.metrics.trainer_examples.inc()
        if self.pending_since is None:
            self.pending_since = time.monotonic()

    def _remember_negative(self, user_id: str, item_id: str) -> None:
        found = self._negatives.setdefault(user_id, [])
        found.append(item_id)
        del found[:-MAX_NEGATIVES]
        self._negatives.move_to_end(user_id)
        _trim(self._negatives)

    def _was_clicked(self, user_id: str, item_id: str) -> bool:
        """A choice already made an example through its click feedback."""
        clicked = self._clicked.get(user_id)
        if clicked is None or item_id not in clicked:
            return False
        clicked.discard(item_id)
        return True

    # --- rounds -----------------------------------------------------------------
    def due(self) -> bool:
        waited = time.monotonic() - self.pending_since if self.pending_since else 0.0
        return self.policy.due(len(self.pending), waited)

    async def round(self) -> dict[str, Any] | None:
        """Train a candidate on earlier examples, judge it against the current version on
        the newest window, save it, promote it unless it is worse. The announcement."""
        async with self._lock:
            if not self.pending:
                return None
            examples, self.pending, self.pending_since = self.pending, [], None
            return await self._round(examples)

    async def _round(self, examples: list[Example]) -> dict[str, Any]:
        started = time.perf_counter()
        current_version = await self.registry.current()
        if current_version != self.current.version:  # an operator promoted or rolled back
            self.current = await self.registry.load(current_version)
        train, held = split_holdout(examples, self.s.trainer_holdout_fraction, lambda e: e.ts)
        cutoff = max(e.ts for e in examples)
        ids = list(self.catalog.index.ids)
        table = ItemTable(ids, self.catalog.index.matrix.copy(),
                          self.catalog.popularity.prior(ids, cutoff))
        version = await self.registry.next_version()
        data = list(self.buffer) + [replace(e, seen=frozenset()) for e in train]
        candidate, fitted = await asyncio.to_thread(fit, self.current, data, table,
                                                    self.s.fit_params(), version)
        w = self.s.popularity_weight
        theirs = await asyncio.to_thread(score, candidate, held, table, w)
        ours = await asyncio.to_thread(score, self.current, held, table, w)
        promoted = theirs["n"] > 0 and theirs["ndcg@10"] >= ours["ndcg@10"]
        reason = ("held-out NDCG@10 not worse than the current version's" if promoted else
                  "no held-out examples" if theirs["n"] == 0 else
                  "held-out NDCG@10 worse than the current version's")
        self.buffer.extend(replace(e, seen=frozenset()) for e in examples)
        announcement = {
            "type": "trained", "version": version, "parent": self.current.version,
            "base_version": candidate.base_version, "created_at": time.time(),
            "promoted": promoted, "reason": reason,
            "window": {"from_ts": min(e.ts for e in examples), "to_ts": cutoff,
                       "heldout_from_ts": held[0].ts if held else None},
            "examples": {"train": len(train), "heldout": len(held), "replayed": len(data) - len(train)},
            "training": fitted, "heldout": {"candidate": theirs, "current": ours},
        }
        await self.registry.save(candidate, announcement)
        if promoted:
            await self.registry.promote(version, reason="trainer: " + reason)
            self.current = candidate
        await self.registry.prune(self.s.model_keep_versions)
        announcement["round_seconds"] = round(time.perf_counter() - started, 2)
        log("model_trained", version=version, promoted=promoted, examples=len(examples),
            candidate_ndcg=theirs["ndcg@10"], current_ndcg=ours["ndcg@10"],
            loss=fitted["loss"], seconds=announcement["round_seconds"])
        return announcement


def _trim(users: OrderedDict) -> None:
    while len(users) > MAX_USERS_TRACKED:
        users.popitem(last=False)
