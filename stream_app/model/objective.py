"""A round's work (pure: no Kafka, no Redis): train, fit the blend, judge.

An example is what a user chose (the positive), with the interests they had just
before and their latest chosen items. A round turns the buffered examples into each
user's choice sequence and trains the sequence model on it (``sequence.py``: every
choice predicts the next, skips and dislikes as hard negatives), fits the weights
that combine sequence, interests and popularity on the older half of the held-out
window, and scores candidate, current version and plain encoder on the newer half,
each example ranked exactly as a worker ranked it then (``scoring.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from stream_app.model.adapter import Adapter, Blend
from stream_app.model.scoring import (Defaults, Parts, fit_blend, judged, parts, rank_parts,
                                      sequence_part)
from stream_app.model.sequence import SequenceParams, fit_sequence, windows_of

MAX_HARD = 20  # the most recent skips and dislikes of an example that are trained on


@dataclass(frozen=True)
class SparseScores:
    """Scores of some items: ``values[n]`` is the score of ``ids[rows[n]]``. ``ids`` is the
    catalog's ids as of then, one tuple shared by the examples of many batches, so an
    example keeps two small arrays (and a pickled round one copy of the ids)."""

    ids: tuple[str, ...] = ()
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def as_dict(self) -> dict[str, float]:
        """Item id -> score."""
        return {self.ids[r]: float(v) for r, v in zip(self.rows.tolist(), self.values)}


NO_SCORES = SparseScores()


@dataclass(frozen=True)
class Example:
    ts: float  # event time of the choice
    user_id: str
    interests: np.ndarray  # (m, d) unit directions before the choice, base space (float16)
    strengths: np.ndarray  # (m,) interest strengths at ts
    positive: str
    negatives: tuple[str, ...] = ()  # skipped or disliked: hard negatives
    seen: frozenset[str] = frozenset()  # excluded when scoring, as serving excludes them
    snapshot: int = -1  # the popularity prior as it was then (ItemTable.history); -1: none
    recent: tuple[str, ...] = ()  # the user's latest chosen items before this one, oldest first
    covisit: SparseScores = NO_SCORES  # the items with a co-visit score as the workers
    # ranked then, and those scores


@dataclass
class ItemTable:
    """The catalog as a round sees it: text vectors, the prior at the round's cutoff, and
    the prior as it was at earlier moments (an example is trained and judged with the
    prior its own time had, as a worker ranked it then, not with later popularity)."""

    ids: Sequence[str]
    text: np.ndarray  # (N, d) text vectors
    prior: np.ndarray  # (N,) log(1 + decayed popularity) at the cutoff
    history: np.ndarray | None = None  # (S, N) the prior at S earlier moments
    history_rows: dict[int, int] = field(default_factory=dict)  # snapshot id -> row

    def priors(self, examples: Sequence[Example]) -> np.ndarray:
        """(len(examples), N): each example's prior."""
        rows = [self.history_rows.get(e.snapshot, -1) for e in examples]
        out = np.empty((len(examples), len(self.ids)), np.float32)
        for n, row in enumerate(rows):
            out[n] = self.history[row] if row >= 0 else self.prior
        return out

    def covisits(self, examples: Sequence[Example]) -> np.ndarray:
        """(len(examples), N): each example's co-visit scores."""
        out = np.zeros((len(examples), len(self.ids)), np.float32)
        here: dict[int, np.ndarray] = {}  # id(an ids tuple) -> its rows here (-1: gone)
        for n, e in enumerate(examples):
            scores = e.covisit
            if not len(scores):
                continue
            at = here.get(id(scores.ids))
            if at is None:
                at = here[id(scores.ids)] = np.array(self.rows(scores.ids), np.int64)
            cols = at[scores.rows]
            kept = cols >= 0
            out[n, cols[kept]] = scores.values[kept]
        return out

    @cached_property
    def lookup(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.ids)}

    def text_of(self, item_id: str) -> np.ndarray | None:
        row = self.lookup.get(item_id)
        return None if row is None else self.text[row]

    def rows(self, item_ids: Sequence[str]) -> list[int]:
        """Row of each item, -1 for items the table does not hold."""
        return [self.lookup.get(i, -1) for i in item_ids]



def sequences(examples: Sequence[Example], table: ItemTable
              ) -> tuple[list[list[int]], list[list[int]]]:
    """Each user's choices in event-time order (rows of ``table``), preceded by the items
    their first example had before it, and the skips before their latest choice."""
    by_user: dict[str, list[Example]] = {}
    for e in sorted(examples, key=lambda e: e.ts):
        by_user.setdefault(e.user_id, []).append(e)
    lookup = table.lookup
    seqs, negatives = [], []
    for user_examples in by_user.values():
        items = [*user_examples[0].recent, *(e.positive for e in user_examples)]
        seqs.append([lookup[i] for i in items if i in lookup])
        negatives.append([lookup[i] for i in user_examples[-1].negatives[-MAX_HARD:]
                          if i in lookup])
    return seqs, negatives


@dataclass(frozen=True)
class _Ranked:
    """What ranking examples as a worker did takes, whatever the version: the score's
    parts but the sequence model's, strengths, excluded rows, each example's chosen row
    (examples with a known choice) and its history as rows."""

    parts: Parts
    strengths: list[np.ndarray]
    excluded: list[list[int]]
    positives: list[int]
    histories: list[list[int]]

    def of(self, adapter: Adapter, table: "ItemTable"
           ) -> tuple[Parts, list[np.ndarray], list[list[int]], list[int]]:
        """``adapter``'s parts (its sequence part added), strengths, excluded, positives."""
        sequence = sequence_part(adapter, adapter.item_vectors(table.ids, table.text),
                                 self.histories)
        return (replace(self.parts, sequence=sequence), self.strengths, self.excluded,
                self.positives)


def _ranked(examples: Sequence[Example], table: ItemTable) -> _Ranked:
    lookup = table.lookup
    histories = [[lookup[i] for i in e.recent if i in lookup] for e in examples]
    p = parts(Adapter.base(""), table.text, table.text, table.priors(examples),
              [np.asarray(e.interests, np.float32) for e in examples], histories,
              table.covisits(examples), with_sequence=False)
    return _Ranked(p, [e.strengths for e in examples],
                   [[lookup[i] for i in e.seen if i in lookup] for e in examples],
                   [lookup[e.positive] for e in examples], histories)


def _judged(examples: Sequence[Example], table: ItemTable) -> list[Example]:
    return [e for e in examples if e.positive in table.lookup]


def score(adapter: Adapter, examples: Sequence[Example], table: ItemTable,
          defaults: Defaults, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of ``adapter`` on ``examples``, ranked exactly as a worker ranks
    (``defaults``: the settings' weights, for versions that fitted none)."""
    return score_each({"": adapter}, examples, table, defaults, k)[""]


def score_each(adapters: Mapping[str, Adapter], examples: Sequence[Example],
               table: ItemTable, defaults: Defaults, k: int = 10
               ) -> dict[str, dict[str, float]]:
    """``score`` of each version on the same examples (what no version changes is
    computed once)."""
    examples = _judged(examples, table)
    if not examples:
        return {name: {"hr@10": 0.0, "ndcg@10": 0.0, "n": 0} for name in adapters}
    common = _ranked(examples, table)
    out = {}
    for name, adapter in adapters.items():
        p, strengths, excluded, positives = common.of(adapter, table)
        hr, gain = judged(rank_parts(p, adapter.blend, defaults, strengths, excluded, k),
                          positives, k)
        out[name] = {"hr@10": round(hr, 4), "ndcg@10": round(gain, 4), "n": len(examples)}
    return out


def blend_for(adapter: Adapter, examples: Sequence[Example], table: ItemTable,
              defaults: Defaults) -> Adapter:
    """``adapter`` with the blend that ranks ``examples`` best, searched from the settings'
    weights (``defaults``: which weights are fitted, and the others' values; unchanged
    without any examples)."""
    examples = _judged(examples, table)
    if not examples or adapter.is_base:
        return adapter
    start = Blend(defaults.sequence, defaults.interest, defaults.popularity, defaults.covisit)
    return adapter.with_blend(fit_blend(*_ranked(examples, table).of(adapter, table), start,
                                        margin=defaults.margin, names=defaults.fitted))


def train_and_judge(start: Adapter, current: Adapter, seqs: Sequence[Sequence[int]],
                    negatives: Sequence[Sequence[int]], held: Sequence[Example],
                    table: ItemTable, params: SequenceParams, defaults: Defaults,
                    version: str
                    ) -> tuple[Adapter, dict[str, Any], dict[str, dict[str, float]]]:
    """A round's work in one call (so it can run in another process): the candidate,
    trained from ``start`` on the choice sequences ``seqs`` (``sequences``), its blend
    fitted on the older half of ``held``, and candidate, current and plain encoder scored
    on the newer half."""
    weights, fitted = fit_sequence(start.sequence, windows_of(seqs, negatives, params.length),
                                   table.ids, table.text, params)
    calibrate, judge = _halves(held)
    candidate = blend_for(Adapter(version, start.base_version, weights), calibrate, table,
                          defaults)
    fitted["blend"] = vars(candidate.blend)
    scores = score_each({"candidate": candidate, "current": current,
                         "base": Adapter.base(current.base_version)}, judge, table, defaults)
    return candidate, fitted, scores


def _halves(held: Sequence[Example]) -> tuple[list[Example], list[Example]]:
    ordered = sorted(held, key=lambda e: e.ts)
    cut = len(ordered) // 2
    return ordered[:cut], ordered[cut:]


def training_process(threads: int, nice: int = 0) -> None:
    """Set up a training process: torch imported ahead of the first round (seconds a
    round need not wait), its thread count fixed, so a round is reproducible, and its
    priority lowered by ``nice`` below its parent's (the trainer's, itself lowered), so
    the workers beside it keep their latency."""
    import torch

    from stream_app.threads import limit_blas

    torch.set_num_threads(threads)
    limit_blas(threads)  # numpy's too: its idle threads would spin on the workers' cores
    lower_priority(nice)
    if nice > 0:
        idle_priority()


def _threads_of_this_process() -> list[int]:
    """Thread ids of this process (Linux: a thread's priority and scheduling class are
    its own, and threads started before a change, numpy's BLAS pool, keep theirs); the
    process id alone elsewhere."""
    import os

    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def idle_priority() -> None:
    """Run this process only on CPU nobody else wants (Linux ``SCHED_IDLE``, every thread
    of it): a task that wakes, a worker's batch, takes the core at once, and the
    scheduler counts a core that runs only idle-class work as free when it places one
    (nice alone still has a worker wait its turn behind the training on a busy core).
    Threads started later inherit it. Nothing where the platform has no such class (nice
    still applies)."""
    import os

    if not (hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")):
        return
    for thread in _threads_of_this_process():
        try:
            os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # gone meanwhile, or a container that forbids it: nice is left
            pass


def lower_priority(nice: int) -> None:
    """This process's CPU priority (every thread of it) lowered by ``nice`` (Unix nice
    increment; capped at the lowest priority; nothing where the platform has no nice)."""
    import os

    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    for thread in _threads_of_this_process():
        try:
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
        except OSError:  # the thread is gone meanwhile
            pass
