"""Baselines as rankers: learn from one event, rank the whole catalog for a user.

A ranker sees events in stream order (``learn_one``) and is asked for a user's top-k
right after each one (``rank``), which is what ``replay_ranker`` records: the same
meaning as the pipeline's recommendations, judged with ``protocol.judge``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from stream_app.model.covisit import CoVisits
from stream_app.model.sequence import (SequenceParams, SequenceScorer, SequenceWeights,
                                       fit_sequence, windows_of)


class Ranker(Protocol):
    def learn_one(self, event: Mapping[str, Any]) -> None: ...

    def rank(self, user_id: str, k: int) -> list[str]: ...


def replay_ranker(ranker: Ranker, events: Iterable[Mapping[str, Any]],
                  k: int = 10) -> dict[str, list[str]]:
    """event_id -> the ranker's top-k for that event's user, right after learning it."""
    recs: dict[str, list[str]] = {}
    for event in events:
        ranker.learn_one(event)
        recs[str(event["event_id"])] = ranker.rank(str(event["user_id"]), k)
    return recs


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = -np.partition(-scores, k - 1)[k - 1]  # the k-th highest
    above = np.flatnonzero(scores > kth)
    part = np.concatenate([above, np.flatnonzero(scores == kth)[:k - len(above)]])
    return part[np.lexsort((part, -scores[part]))]


class _Catalog:
    """Item ids <-> rows, and each user's seen rows (events on unknown items are ignored)."""

    def __init__(self, items: Sequence[str]) -> None:
        self.ids = [str(i) for i in dict.fromkeys(items)]
        self.row = {item: n for n, item in enumerate(self.ids)}
        self.seen: dict[str, set[int]] = {}

    def see(self, event: Mapping[str, Any]) -> tuple[str, int | None]:
        user, row = str(event["user_id"]), self.row.get(str(event["item_id"]))
        if row is not None:
            self.seen.setdefault(user, set()).add(row)
        return user, row

    def unseen_top(self, user: str, scores: np.ndarray, k: int,
                   fill: np.ndarray | None = None) -> list[str]:
        """Top-k unseen by ``scores`` (> 0 only when ``fill`` is given), then by ``fill``."""
        seen = np.fromiter(self.seen.get(user, ()), dtype=np.int64)
        scores = scores.astype(np.float64)
        scores[seen] = -np.inf
        top = _top(scores, k)
        top = top[scores[top] > (0.0 if fill is not None else -np.inf)]
        if fill is not None and len(top) < k:
            rest = fill.astype(np.float64)
            rest[seen] = -np.inf
            rest[top] = -np.inf
            more = _top(rest, k - len(top))
            top = np.concatenate([top, more[rest[more] > -np.inf]])
        return [self.ids[n] for n in top]


class ItemKNN:
    """Item-item cosine on co-occurrence, counted online: the co-visit part of the model's
    score (``model.covisit``) alone, over the whole catalog.

    When a user picks j, c[i, j] (and c[j, i]) += 1 for each i among that user's
    previous ``history`` distinct items; sim(i, j) = c[i, j] / sqrt(n[i] n[j]) with n
    the item counts. A candidate's score: its summed similarity to the user's last
    ``history`` items. Fewer than k candidates with a positive score: the rest by n.
    """

    def __init__(self, items: Sequence[str], history: int = 20) -> None:
        self.catalog = _Catalog(items)
        self.covisits = CoVisits(history, keep=len(self.catalog.ids))
        self.history = history
        self.counts = np.zeros(len(self.catalog.ids), dtype=np.float64)
        self.recent: dict[str, deque[str]] = {}
        # each catalog row's co-visit row (-1: never chosen), kept as items are chosen
        self._covisit_rows = np.full(len(self.catalog.ids), -1, np.int64)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        user, j = self.catalog.see(event)
        if j is None:
            return
        item = self.catalog.ids[j]
        recent = self.recent.setdefault(user, deque(maxlen=self.history))
        self.covisits.add([(tuple(recent), item)])
        self._covisit_rows[j] = self.covisits.rows[item]
        if item in recent:
            recent.remove(item)
        recent.append(item)
        self.counts[j] += 1.0

    def scores(self, user_id: str) -> np.ndarray:
        """Each catalog item's summed similarity to the user's last ``history`` items."""
        recent = self.recent.get(user_id)
        if not recent:
            return np.zeros_like(self.counts)
        return self.covisits.scores([tuple(recent)], self.catalog.ids,
                                    item_rows=self._covisit_rows)[0].astype(np.float64)

    def rank(self, user_id: str, k: int) -> list[str]:
        return self.catalog.unseen_top(user_id, self.scores(user_id), k, fill=self.counts)


class DecayedPopularity:
    """Counts decayed exponentially in event time (half-life ``half_life_s``)."""

    def __init__(self, items: Sequence[str], half_life_s: float = 60 * 86400) -> None:
        self.catalog = _Catalog(items)
        self.rate = math.log(2) / half_life_s
        self.scores = np.zeros(len(self.catalog.ids), dtype=np.float64)
        self.origin: float | None = None  # scores are in units of weight at this time

    def learn_one(self, event: Mapping[str, Any]) -> None:
        _, row = self.catalog.see(event)
        if row is None:
            return
        ts = float(event.get("ts", 0.0))
        if self.origin is None:
            self.origin = ts
        exponent = self.rate * (ts - self.origin)
        if exponent > 50.0:  # move the origin forward before weights overflow
            self.scores *= math.exp(-exponent)
            self.origin, exponent = ts, 0.0
        self.scores[row] += math.exp(exponent)

    def rank(self, user_id: str, k: int) -> list[str]:
        return self.catalog.unseen_top(user_id, self.scores, k)


class SASRec:
    """SASRec on its own: ID embeddings only (no text), cross-entropy over the catalog;
    the sequence model's code (``model.sequence``) outside the system.

    ``every`` > 0: learned from the stream, retrained every ``every`` events, from the
    previous weights, on every earlier event (more than the trainer keeps), with
    ``params.epochs`` passes: what a model that learns in rounds can know at each moment.
    ``train_on`` given: trained once, before the stream, on those events (the literature's
    leave-one-out: all but each user's last rating, so it has seen other users' later
    choices); its prequential figures are not a streaming result.
    """

    def __init__(self, items: Sequence[str], params: SequenceParams, every: int = 0,
                 train_on: Sequence[Mapping[str, Any]] = ()) -> None:
        self.catalog = _Catalog(items)
        self.params = replace(params, use_text=False, use_ids=True)
        self.every = every
        self.history: dict[str, list[int]] = {}
        self.learned = 0
        self.weights: SequenceWeights | None = None
        self._scorer: SequenceScorer | None = None
        self._items: np.ndarray | None = None
        self._no_text = np.zeros((len(self.catalog.ids), 1), np.float32)  # ID only
        if train_on:
            by_user: dict[str, list[int]] = {}
            for event in train_on:
                row = self.catalog.row.get(str(event["item_id"]))
                if row is not None:
                    by_user.setdefault(str(event["user_id"]), []).append(row)
            self._fit(list(by_user.values()))

    def _fit(self, sequences: list[list[int]]) -> None:
        windows = windows_of(sequences, [[] for _ in sequences], self.params.length)
        self.weights, _ = fit_sequence(self.weights, windows, self.catalog.ids, self._no_text,
                                       replace(self.params, seed=self.params.seed + self.learned))
        self._scorer = SequenceScorer(self.weights)
        self._items = self._scorer.item_vectors(self.catalog.ids, self._no_text)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        user, row = self.catalog.see(event)
        if row is None:
            return
        self.history.setdefault(user, []).append(row)
        self.learned += 1
        if self.every and self.learned % self.every == 0:
            self._fit(list(self.history.values()))

    def rank(self, user_id: str, k: int) -> list[str]:
        history = self.history.get(user_id)
        if self._scorer is None or self._items is None or not history:
            return []
        query = self._scorer.queries([history], self._items)[0]
        return self.catalog.unseen_top(user_id, self._items @ query, k)
