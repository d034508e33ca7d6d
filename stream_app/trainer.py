"""The trainer: feedback and activity in, examples out, examples into model versions.

It keeps its own replica of every user's interest state (Redis, scope ":trainer"),
built by the workers' own code from the same activity stream, so an example holds
the interests a user had *before* the choice it records, never later ones. A round
trains on earlier examples only and is judged on the newest window it holds out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import FORGET, FeedbackEvent, Record
from stream_app.encoder import Encoder
from stream_app.logs import log
from stream_app.metrics import Metrics
from stream_app.model.adapter import Adapter
from stream_app.model.interest import CHOICES, UserState
from stream_app.model.objective import (NO_SCORES, Example, ItemTable, SparseScores,
                                       sequences, train_and_judge, training_process)
from stream_app.model.rounds import RoundPolicy, Standing, promotion, split_holdout
from stream_app.pipeline import Outputs, Owed, OwedBatches, Processor, Snapshot, choices
from stream_app.store import Store, UserRecord
from stream_app.versions import Registry

SUPERSEDED = "superseded"  # a round's reason when an operator chose meanwhile

# Implicit positives: activity of the types in CHOICES (model.interest). Explicit ones and
# explicit negatives: these feedback types.
POSITIVE_FEEDBACK = frozenset({"click", "like", "purchase"})
NEGATIVE_FEEDBACK = frozenset({"skip", "dislike"})
MAX_NEGATIVES = 50  # hard negatives (and unmatched claims) kept per user
MAX_USERS_TRACKED = 100_000  # users with pending hard negatives / recent clicks
SNAPSHOT_EVERY_EXAMPLES = 1000  # a new prior snapshot at least this often ...
SNAPSHOT_EVERY_S = 86400.0  # ... and whenever event time moved on by this (or 1/50 half-life)


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
        # compact copies (no interests, no seen set): what the sequence model trains on
        self.buffer: deque[Example] = deque(maxlen=settings.trainer_buffer_size)
        self.current = self.lineage = Adapter.base(registry.base_version)
        self._standing = Standing()  # the current version against the encoder
        self._negatives: OrderedDict[str, list[tuple[str, float]]] = OrderedDict()
        self._claims: OrderedDict[str, dict[str, str]] = OrderedDict()
        # what a failed batch applied, counted and took, kept for its retry (Owed)
        self._owed = OwedBatches()
        # the last batch observed, and what it gave: retried only when sending its dead
        # letters failed, it is not observed twice (its feedback would be taken again)
        self._observed: tuple[tuple[tuple[str, int, int], ...], Outputs] | None = None
        self._forgotten: set[str] = set()  # users forgotten since the current round began
        self._lock = asyncio.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._training_pid: Future | None = None
        # the popularity prior at past moments: examples are trained with their own time's
        self._snapshots: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}
        self._snapshot_id = -1
        self._snapshot_ts = -math.inf
        self._since_snapshot = 0
        self._ids: tuple[str, ...] | None = None  # _catalog_ids; None: read again
        catalog.index.watch(self._catalog_changed)
        self._snapshot_every_s = min(SNAPSHOT_EVERY_S, settings.popularity_half_life_s / 50)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:  # spawned: never fork a process that runs threads
            self._executor = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"),
                initializer=training_process,
                initargs=(self.s.trainer_threads, self.s.trainer_nice))
        return self._executor

    def memory(self) -> dict[str, int]:
        """Resident bytes of this process and of the training process (where known)."""
        out = {"trainer": resident_bytes()}
        pid = self._training_pid
        if pid is not None and pid.done() and not pid.exception():
            out["training"] = resident_bytes(pid.result())
        return {k: v for k, v in out.items() if v is not None}

    def close(self) -> None:
        """Stop the training process (a round in flight is abandoned)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def start(self) -> None:
        # starts the training process ahead of a round; its pid, for its memory
        self._training_pid = self._pool().submit(os.getpid)
        await self.catalog.load()
        self._serve(await self.registry.load(await self.registry.current()))

    # --- examples ---------------------------------------------------------------
    async def observe(self, records: Sequence[Record]) -> Outputs:
        """Skips and dislikes first (each waits for the user's next choice at or after it),
        then activity (each choice with the interests just before it), then the positive
        feedback no activity event carried (with the interests as of its own time).

        A batch retried after a failure that came once some of its users' states were
        written (Redis refusing a write, say) finds those events applied: what the failed
        attempt applied, counted and took is kept (``Owed``, by the batch's records), so
        each choice still makes one example and is counted once."""
        key = OwedBatches.key(records)
        if self._observed is not None and self._observed[0] == key:
            return self._observed[1]  # done; its dead letters failed to send: again
        owed = self._owed.take(key)
        try:
            out = await self._observe(records, owed)
            self._observed = (key, out)
            return out
        except Exception:
            self._owed.keep(key, owed)
            raise

    async def _observe(self, records: Sequence[Record], owed: Owed) -> Outputs:
        out = Outputs()
        # bad feedback to out.rejected: the trainer's app dead-letters it (unless the
        # workers read feedback too)
        feedback = await self.processor.valid_feedback(
            [r for r in records if r.topic == self.s.topic_feedback], out)
        activity = [r for r in records if r.topic != self.s.topic_feedback]
        verdicts = [(fb, self._verdict(fb)) for fb in feedback]
        snapshots = await self.processor.apply_activity(activity, out, owed)
        snapshots = owed.as_applied(snapshots)
        self._snapshot(max([s.pending.event.ts for s in snapshots] + [f.ts for f in feedback],
                           default=0.0))
        if owed.popular:  # after: as a worker ranks (what a failed shard left stays owed)
            await self.processor.count(Owed(popular=owed.popular), share=False)
        chosen = [fb for fb, verdict in verdicts if verdict == "choice"]
        if not owed.observed:
            by_user: dict[str, list[Snapshot]] = {}
            for snap in snapshots:
                by_user.setdefault(snap.pending.event.user_id, []).append(snap)
            absent = list(dict.fromkeys(fb.user_id for fb in chosen
                                        if fb.user_id not in by_user))
            stored = await self.store.read_users(absent) if absent else {}
            # from here on nothing waits or fails: the examples are taken once
            self._take_examples(verdicts, chosen, snapshots, by_user, stored, out)
            owed.observed = True
        # counted after the examples took theirs: as a worker ranks a batch, then counts
        await self.catalog.count_covisits(choices(snapshots), share=False)
        out.counts["feedback_choices"] += len(chosen)
        out.counts["examples"] = len(self.pending)
        return out

    def forget(self, user_ids: set[str]) -> None:
        """Nothing of these users stays: their pending and buffered examples, hard
        negatives and claims (their state replica goes with the ``forget`` event)."""
        self.pending = [e for e in self.pending if e.user_id not in user_ids]
        kept = [e for e in self.buffer if e.user_id not in user_ids]
        if len(kept) < len(self.buffer):
            self.buffer.clear()
            self.buffer.extend(kept)
        for uid in user_ids:
            self._negatives.pop(uid, None)
            self._claims.pop(uid, None)
        self._forgotten |= user_ids  # a round under way took theirs: not buffered after it

    def _verdict(self, fb: FeedbackEvent) -> str | None:
        """"choice", "negative", or None (a rating without a value says neither)."""
        if fb.type == "rate":
            if fb.rating is None:
                return None
            return "choice" if fb.rating >= self.s.rating_neutral else "negative"
        if fb.type in POSITIVE_FEEDBACK:
            return "choice"
        return "negative" if fb.type in NEGATIVE_FEEDBACK else None

    def _take_examples(self, verdicts: Sequence[tuple[FeedbackEvent, str | None]],
                       chosen: Sequence[FeedbackEvent], snapshots: Sequence[Snapshot],
                       by_user: dict[str, list[Snapshot]],
                       stored: dict[str, UserRecord], out: Outputs) -> None:
        """The batch's examples into ``pending``: hard negatives first, then each applied
        choice with the interests before it, then the clicks on recommendations that no
        activity event of the batch claimed (``chosen``; ``stored``: the users the batch
        has no snapshot of)."""
        for fb, verdict in verdicts:
            if verdict == "negative":
                self._remember_negative(fb.user_id, fb.item_id, fb.ts)
        new: list[Example] = []
        for snap in snapshots:
            ev = snap.pending.event
            if not snap.applied or ev.item_id is None:
                continue
            if ev.type in NEGATIVE_FEEDBACK:
                self._remember_negative(ev.user_id, ev.item_id, ev.ts)
            elif ev.type in CHOICES and not self._claimed(ev.user_id, ev.item_id, "activity"):
                new.append(self._example(ev.user_id, ev.item_id, ev.ts, snap.before,
                                         snap.exclude - {ev.item_id}))
        new += self._feedback_choices(chosen, by_user, stored)
        gone = {s.pending.event.user_id for s in snapshots
                if s.applied and s.pending.event.type == FORGET}
        if gone:
            new = [e for e in new if e.user_id not in gone]
            self.forget(gone)
            out.counts["forgotten_examples_users"] += len(gone)
        self._pend(new)

    def _feedback_choices(self, chosen: Sequence[FeedbackEvent],
                          by_user: dict[str, list[Snapshot]],
                          stored: dict[str, UserRecord]) -> list[Example]:
        """Examples for clicks (likes, purchases, good ratings) on recommended items."""
        fresh = [fb for fb in chosen if not self._claimed(fb.user_id, fb.item_id, "feedback")]
        out = []
        for fb in fresh:
            earlier = [snap for snap in by_user.get(fb.user_id, ())
                       if snap.pending.event.ts <= fb.ts]
            if earlier:  # this batch already moved the user on: as of the feedback's time
                state, seen = earlier[-1].state, earlier[-1].exclude
            else:
                first = by_user.get(fb.user_id)
                state = first[0].before if first else stored[fb.user_id].state
                seen = first[0].exclude if first else stored[fb.user_id].seen
            out.append(self._example(fb.user_id, fb.item_id, fb.ts, state,
                                     seen - {fb.item_id}))
        return out

    def _example(self, user_id: str, item_id: str, ts: float, state: UserState,
                 seen: frozenset[str]) -> Example:
        """The example of one choice (its co-visit scores come with ``_pend``)."""
        if state.interests:
            interests = np.stack([i.direction() for i in state.interests]).astype(np.float16)
        else:
            interests = np.zeros((0, self.catalog.index.dim), np.float16)
        waiting = self._negatives.get(user_id, [])
        negatives = tuple(item for item, at in waiting if at <= ts)
        if negatives:
            self._negatives[user_id] = [(item, at) for item, at in waiting if at > ts]
        return Example(ts, user_id, interests,
                       state.strengths(ts, self.processor.params).astype(np.float32),
                       item_id, negatives, seen, self._snapshot_id, state.recent_item_ids())

    def _pend(self, examples: list[Example]) -> None:
        """``examples`` join the next round, each with the co-visit scores it was ranked
        with (the counts before this batch's choices, as a worker ranks a batch before
        counting it), kept sparse: the items with a score. One call for the batch."""
        if not examples:
            return
        ids = self._catalog_ids()
        scores = self.catalog.covisit_scores([e.recent for e in examples])
        for e, row in zip(examples, scores):
            top = np.flatnonzero(row).astype(np.int32)
            self.pending.append(replace(e, covisit=SparseScores(ids, top, row[top])))
        self._since_snapshot += len(examples)
        self.metrics.trainer_examples.inc(len(examples))
        if self.pending_since is None:
            self.pending_since = time.monotonic()

    def _snapshot(self, at: float) -> None:
        """Keep the prior as of ``at`` unless the last snapshot is recent enough."""
        if (at - self._snapshot_ts < self._snapshot_every_s
                and self._since_snapshot < SNAPSHOT_EVERY_EXAMPLES):
            return
        ids = self._catalog_ids()
        self._snapshot_id += 1
        self._snapshots[self._snapshot_id] = (ids, self._prior(at).astype(np.float16))
        self._snapshot_ts, self._since_snapshot = at, 0

    def _prior(self, at: float) -> np.ndarray:
        """The prior of every catalog item (``_catalog_ids``' order) as of ``at``: kept as
        arrays beside the catalog (``PriorRows``), only the changed counts read again."""
        return self.catalog.prior_rows.prior(at)

    def _catalog_ids(self) -> tuple[str, ...]:
        """The catalog's ids, one shared tuple while the catalog does not change (what
        examples and prior snapshots refer to their items by); read again only after a
        change (at 10^6 items a copy costs ~10 ms)."""
        if self._ids is None:
            self._ids = tuple(self.catalog.index.ids)
        return self._ids

    def _catalog_changed(self, rows: Sequence[int]) -> None:
        self._ids = None

    def _history(self, ids: Sequence[str], examples: Sequence[Example]
                 ) -> tuple[np.ndarray, dict[int, int]]:
        """The snapshots these examples use, as rows over ``ids``."""
        used = sorted({e.snapshot for e in examples if e.snapshot in self._snapshots})
        history = np.zeros((len(used), len(ids)), np.float16)
        rows: dict[int, int] = {}
        aligned: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(snapshot ids) -> mapping
        lookup = {item_id: n for n, item_id in enumerate(ids)}
        for n, sid in enumerate(used):
            snap_ids, prior = self._snapshots[sid]
            if id(snap_ids) not in aligned:
                at = np.array([lookup.get(i, -1) for i in snap_ids], dtype=np.int64)
                aligned[id(snap_ids)] = (at >= 0, at)
            valid, at = aligned[id(snap_ids)]
            history[n, at[valid]] = prior[valid]
            rows[sid] = n
        return history, rows

    def _forget_snapshots(self) -> None:
        """Drop snapshots no pending example uses any more (buffered examples train the
        sequence model, which reads no prior; only held-out judging does)."""
        oldest = min((e.snapshot for e in self.pending), default=self._snapshot_id)
        for sid in [sid for sid in self._snapshots if sid < min(oldest, self._snapshot_id)]:
            del self._snapshots[sid]

    def _remember_negative(self, user_id: str, item_id: str, ts: float) -> None:
        found = self._negatives.setdefault(user_id, [])
        found.append((item_id, ts))
        del found[:-MAX_NEGATIVES]
        self._negatives.move_to_end(user_id)
        _trim(self._negatives)

    def _claimed(self, user_id: str, item_id: str, by: str) -> bool:
        """One example per choice: the first of its activity event and its click feedback
        (``by``) claims it, the other finds it claimed (and clears the claim). A repeat of
        the same kind is another choice."""
        claims = self._claims.setdefault(user_id, {})
        self._claims.move_to_end(user_id)
        if claims.get(item_id, by) != by:
            del claims[item_id]
            return True
        claims.pop(item_id, None)
        claims[item_id] = by
        if len(claims) > MAX_NEGATIVES:
            del claims[next(iter(claims))]
        _trim(self._claims)
        return False

    # --- rounds -----------------------------------------------------------------
    def due(self) -> bool:
        waited = time.monotonic() - self.pending_since if self.pending_since else 0.0
        return self.policy.due(len(self.pending), waited)

    def _serve(self, adapter: Adapter, train_from: bool = True) -> None:
        """``adapter`` is now the current version: its standing starts anew, and unless
        it is a revert to the encoder, candidates train from it from now on."""
        self.current, self._standing = adapter, Standing()
        if train_from:
            self.lineage = adapter

    @property
    def training(self) -> bool:
        """A round is running."""
        return self._lock.locked()

    async def _superseded(self, candidate: Adapter, announcement: dict[str, Any]) -> None:
        """An operator made another version current while ``candidate`` trained: it is kept,
        not promoted, and says so."""
        now = await self.registry.current()
        announcement.update(promoted=False, reason=f"{SUPERSEDED}: {now} was made current "
                            "during the round")
        await self.registry.describe(candidate, announcement)
        log("model_superseded", level=logging.WARNING, version=candidate.version, current=now)

    async def round(self) -> dict[str, Any] | None:
        """Train a candidate on earlier examples, judge it against the current version on
        the newest window, save it, promote it unless it is worse. The announcement.

        Candidates train from ``lineage``: the latest promoted version, which stays the
        starting point while a revert has the workers on the plain encoder, so what the
        versions learned is not thrown away with it."""
        async with self._lock:
            if not self.pending:
                return None
            examples, self.pending, self.pending_since = self.pending, [], None
            self._forgotten = set()
            return await self._round(examples)

    async def _round(self, examples: list[Example]) -> dict[str, Any]:
        started = time.perf_counter()
        # the catalog and prior as of the cutoff, before anything awaits: batches observed
        # meanwhile count popularity that held-out judging must not see
        train, held = split_holdout(examples, self.s.trainer_holdout_fraction, lambda e: e.ts)
        cutoff = max(e.ts for e in examples)
        ids = self._catalog_ids()  # the examples' tuple: one copy goes to the round
        table = ItemTable(ids, self.catalog.index.matrix.copy(), self._prior(cutoff),
                          *self._history(ids, held))
        current_version = await self.registry.current()
        if current_version != self.current.version:  # an operator promoted or rolled back
            self._serve(await self.registry.load(current_version))
        version = await self.registry.next_version()
        replayed = len(self.buffer)
        seqs, negatives = sequences([*self.buffer, *train], table)
        # in a process of its own: a round holds no GIL the consuming event loop needs
        candidate, fitted, held_out = await asyncio.get_running_loop().run_in_executor(
            self._pool(), train_and_judge, self.lineage, self.current, seqs, negatives, held,
            table, self.s.sequence_params(), self.s.defaults(), version)
        theirs, ours, text_only = held_out["candidate"], held_out["current"], held_out["base"]
        promoted, reason = promotion(theirs, ours, text_only,
                                     self.s.trainer_promotion_tolerance)
        self.buffer.extend(_compact(e) for e in examples if e.user_id not in self._forgotten)
        self._forget_snapshots()
        announcement = {
            "type": "trained", "version": version, "parent": self.lineage.version,
            "base_version": candidate.base_version, "created_at": time.time(),
            "promoted": promoted, "reason": reason,
            "window": {"from_ts": min(e.ts for e in examples), "to_ts": cutoff,
                       "heldout_from_ts": held[0].ts if held else None},
            "examples": {"train": len(train), "heldout": len(held),
                         "replayed": replayed},
            "training": fitted,
            "heldout": {"candidate": theirs, "current": ours, "base": text_only},
            "reverted_to": None,
        }
        await self.registry.save(candidate, announcement)
        if promoted:
            if await self.registry.promote(version, reason="trainer: " + reason,
                                           replacing=current_version):
                self._serve(candidate)
            else:  # the operator's choice stands; the next round trains from it
                await self._superseded(candidate, announcement)
        else:
            self._standing.add(ours, text_only)
            if (not self.current.is_base
                    and self._standing.should_revert(self.s.trainer_revert_windows)):
                base = Adapter.base(self.registry.base_version)
                if await self.registry.promote(
                        base.version, replacing=current_version,
                        reason="trainer: the current version scored below the plain encoder "
                               "on held-out"):
                    announcement["reverted_to"] = base.version
                    self._serve(base, train_from=False)
        await self.registry.prune(self.s.model_keep_versions)
        announcement["round_seconds"] = round(time.perf_counter() - started, 2)
        log("model_trained", version=version, promoted=promoted,
            reverted_to=announcement["reverted_to"], examples=len(examples),
            candidate_ndcg=theirs["ndcg@10"], current_ndcg=ours["ndcg@10"],
            loss=fitted["loss"], seconds=announcement["round_seconds"])
        return announcement


def outcome(announcement: dict[str, Any]) -> str:
    """A round's outcome as metrics label it: promoted, refused (it scored worse) or
    superseded (an operator chose a version while it trained)."""
    if announcement["promoted"]:
        return "promoted"
    return SUPERSEDED if announcement["reason"].startswith(SUPERSEDED) else "refused"


_NO_INTERESTS = np.zeros((0, 0), np.float16)
_NO_STRENGTHS = np.zeros(0, np.float32)


def _compact(e: Example) -> Example:
    """What the buffer keeps of an example: the choice and the items before it."""
    return replace(e, interests=_NO_INTERESTS, strengths=_NO_STRENGTHS, seen=frozenset(),
                   snapshot=-1, covisit=NO_SCORES)


def resident_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of a process (Linux /proc), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim(users: OrderedDict) -> None:
    while len(users) > MAX_USERS_TRACKED:
        users.popitem(last=False)
