"""Co-visitation: which items are chosen together, counted online, instantly.

When a user chooses j, every pair (i, j) with i among that user's previous
``history`` chosen items counts once, or ``pair_recency ** k`` when i was chosen k + 1
choices before j: forward ("after i comes j") in full, and backward ("before j came i")
``backward`` times that (1: symmetric, order ignored; 0: only what came after counts).
A count fades with event time: a choice made ``half_life`` seconds before another counts
half as much, and a pair as of its earlier choice, as that item's own count did (counts
are kept scaled up to the latest choice instead of decayed, so a worker that applies the
same choices in another order holds the same similarities).
An item's co-visit score for a user is its summed similarity
c[i, j] / ((n[i] + m) ** (1 - a) * (n[j] + m) ** a), ``a`` the ``target_exponent`` (0.5:
cosine; higher: a suggested item's own popularity counts against it more, and the
popularity prior ranks separately) and ``m`` the ``count_prior`` (choices every count
starts with: a pair of items chosen once each is mostly chance, and without it would
be as similar as can be), to the user's latest ``history`` items, the one chosen k
choices back weighted ``recency ** k``. This is the part of a score that moves with
every event (the sequence model moves with every training round). Only each row's
``keep`` best items get a score, so serving and held-out judging rank the same sparse
part.

Pure: counts live in memory; ``Store`` shares increments between workers.
"""

from __future__ import annotations

import math
from operator import mul
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np

from stream_app.model.ranking import best_indices

DENSE_MAX_ITEMS = 10_000  # a dense n x n float32 matrix up to this many items (400 MB)
REBASE_HALF_LIVES = 16.0  # counts are scaled back down when the newest weighs 2 ** this
FADED_NORM = 1e30  # a history item's 1 / n ** (1 - a) above this: faded out of the score


class Choice(NamedTuple):
    """One choice as co-visits count it (and as workers log it for each other)."""

    previous: Sequence[str]  # the items the user chose before, oldest first
    chosen: str
    at: float | None = None  # event time; None: as of the latest choice counted
    # when each of ``previous`` was chosen (None: at ``at``): a pair counts as of its
    # earlier choice, as that item's own count did
    previous_at: Sequence[float] | None = None


def as_choice(choice: "Choice | tuple") -> Choice:
    """A (previous, chosen[, at]) tuple as a ``Choice``."""
    return choice if isinstance(choice, Choice) else Choice(*choice)


# (every history's latest items, oldest first, one after another; their weights; the
# history each belongs to) -> (more rows to read, their weights, their histories), each
# history's in order
Borrow = Callable[[Sequence[str], np.ndarray, np.ndarray],
                  tuple[np.ndarray, np.ndarray, np.ndarray]]


class _Dense:
    def __init__(self, n: int) -> None:
        self.c = np.zeros((n, n), dtype=np.float32)

    def grow(self, n: int) -> "_Dense | _Sparse":
        if n <= len(self.c):
            return self
        if n > DENSE_MAX_ITEMS:
            sparse = _Sparse(n)
            for i, j in zip(*np.nonzero(self.c)):
                sparse.c[int(i)][int(j)] = float(self.c[i, j])
            return sparse
        size = min(DENSE_MAX_ITEMS, max(n, 2 * len(self.c), 64))  # grows geometrically
        bigger = np.zeros((size, size), np.float32)
        bigger[:len(self.c), :len(self.c)] = self.c
        self.c = bigger
        return self

    def add(self, rows: Sequence[int], cols: Sequence[int], weights: Sequence[float],
            back: float) -> None:
        """c[i, j] += w and c[j, i] += w * back for each pair, in order: one unbuffered
        ``np.add.at`` over the pairs interleaved, so every cell sums in the same order (and
        float32 arithmetic) as one pair at a time would."""
        forward = np.asarray(weights, np.float64)
        at_rows = np.empty(2 * len(forward), np.int64)
        at_cols = np.empty(2 * len(forward), np.int64)
        values = np.empty(2 * len(forward), np.float64)
        at_rows[0::2], at_rows[1::2] = rows, cols
        at_cols[0::2], at_cols[1::2] = cols, rows
        values[0::2], values[1::2] = forward, forward * back
        np.add.at(self.c, (at_rows, at_cols), values.astype(np.float32))

    def weighted_sum(self, rows: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(weights, np.float32) @ self.c[rows, :n]

    def scale(self, factor: float) -> None:
        self.c *= np.float32(factor)


class _Sparse:
    def __init__(self, n: int) -> None:
        self.c: list[dict[int, float]] = [{} for _ in range(n)]

    def grow(self, n: int) -> "_Sparse":
        self.c.extend({} for _ in range(n - len(self.c)))
        return self

    def add(self, rows: Sequence[int], cols: Sequence[int], weights: Sequence[float],
            back: float) -> None:
        for i, j, w in zip(rows, cols, weights):
            self.c[i][j] = self.c[i].get(j, 0.0) + w
            if back:
                self.c[j][i] = self.c[j].get(i, 0.0) + w * back

    def weighted_sum(self, rows: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for i, w in zip(rows, weights):
            row = self.c[i]
            if row:
                cols = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
                vals = np.fromiter(row.values(), dtype=np.float32, count=len(row))
                out[cols] += w * vals
        return out

    def scale(self, factor: float) -> None:
        for row in self.c:
            for j in row:
                row[j] *= factor


class CoVisits:
    """Co-visitation counts over item ids (any id: rows are assigned as ids appear)."""

    def __init__(self, history: int = 20, keep: int = 100, recency: float = 1.0,
                 pair_recency: float = 1.0, backward: float = 1.0,
                 target_exponent: float = 0.5, half_life: float = math.inf,
                 count_prior: float = 0.0) -> None:
        """The defaults are plain item-kNN (cosine, no fading: the baseline); a worker's
        come from ``Settings`` (``Catalog.for_settings``)."""
        self.history = history
        self.keep = keep
        self.recency = recency  # a history item k choices back weighs recency ** k
        self.pair_recency = pair_recency  # a pair k + 1 choices apart counts this ** k
        self.backward = backward  # the reverse direction of a pair counts this much of it
        self.target_exponent = target_exponent  # ``a`` in the similarity (module doc)
        self.half_life = half_life  # event-time seconds; inf: counts never fade
        # choices every item's count starts with in the similarity's divisor (0: none)
        self.count_prior = count_prior
        self.reference: float | None = None  # a choice at this time counts 1
        self.latest: float | None = None  # the latest event time counted
        self.rows: dict[str, int] = {}
        self.counts = np.zeros(0, np.float64)
        self._c: _Dense | _Sparse = _Dense(0)
        # pairs counted but not yet added to ``_c`` (``add`` adds a batch's at once)
        self._pairs: tuple[list[int], list[int], list[float]] = ([], [], [])

    def __len__(self) -> int:
        return len(self.rows)

    def _row(self, item_id: str) -> int:
        row = self.rows.get(item_id)
        if row is None:
            row = self.rows[item_id] = len(self.rows)
            if row >= len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(max(64, row), np.float64)])
            if isinstance(self._c, _Dense) and row >= DENSE_MAX_ITEMS:
                self._flush()  # the pairs before go in as float32, as they would have
            self._c = self._c.grow(row + 1)
        return row

    def _scale(self, at: float, cap: float) -> float:
        """What a choice at ``at`` counts against the reference (``_weight`` set it), at
        most ``cap`` (the exponent is capped first: a far later time cannot overflow)."""
        return 2.0 ** min((at - self.reference) / self.half_life, math.log2(cap))

    def _weight(self, at: float | None) -> float:
        """What a choice at event time ``at`` counts: 2 ** ((at - reference) / half_life),
        the reference moved (and every count scaled down with it) before it grows large."""
        if math.isinf(self.half_life):
            return 1.0
        if at is None:
            at = self.latest
        if at is None:
            return 1.0
        if self.reference is None:
            self.reference = at
        self.latest = at if self.latest is None else max(self.latest, at)
        ahead = (at - self.reference) / self.half_life
        if ahead > REBASE_HALF_LIVES:
            factor = 2.0 ** -ahead
            self._flush()  # what came before is scaled down with the rest
            self.counts *= factor
            self._c.scale(factor)
            self.reference, ahead = at, 0.0
        return 2.0 ** ahead

    def trimmed(self, choices: Iterable[Choice | tuple[Sequence[str], str]]) -> list[Choice]:
        """The choices with only the earlier items ``add`` counts them with (a user's
        latest ``history``, the chosen one aside): what a worker logs for the others."""
        out = []
        for c in map(as_choice, choices):
            before = self._before(c)
            at = None if c.previous_at is None else dict(zip(c.previous, c.previous_at))
            out.append(c._replace(previous=tuple(before), previous_at=None if at is None
                                  else tuple(at[i] for i in before)))
        return out

    def _before(self, choice: Choice) -> list[str]:
        """The earlier items a choice counts with, oldest first."""
        return [i for i in dict.fromkeys(choice.previous) if i != choice.chosen][-self.history:]

    def add(self, choices: Iterable[Choice | tuple[Sequence[str], str]]) -> None:
        """Count choices: (the items the user chose before, oldest first; the chosen one;
        optionally its event time and theirs). Their pairs are added to the matrix at once
        (``_flush``), in the order one choice and one pair at a time would add them."""
        rows, cols, weights = self._pairs
        powers = [self.pair_recency ** back for back in range(self.history)]
        fades = not math.isinf(self.half_life)
        try:
            for choice in map(as_choice, choices):
                previous, chosen, at, previous_at = choice
                weight = self._weight(at)
                col = self._row(chosen)
                self.counts[col] += weight
                before = self._before(choice)[::-1]  # the latest first
                if previous_at is not None and fades:
                    # a pair counts as of its earlier choice, never above the later one
                    since = dict(zip(previous, previous_at))
                    pairs = [weight if item_id not in since
                             else self._scale(since[item_id], weight) for item_id in before]
                else:
                    pairs = [weight] * len(before)
                counted = list(map(mul, pairs, powers))
                rows.extend(map(self._row, before))
                cols.extend([col] * len(before))
                weights.extend(counted)
        finally:  # what was counted of a choice that failed is added, as it was
            self._flush()

    def _flush(self) -> None:
        """Add the pairs counted so far to the matrix."""
        rows, cols, weights = self._pairs
        if rows:
            self._c.add(rows, cols, weights, self.backward)
            for pending in self._pairs:  # emptied in place: ``add`` holds them
                pending.clear()

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Each item's row here (-1: never counted)."""
        return np.array([self.rows.get(i, -1) for i in item_ids], np.int64)

    def current_counts(self, rows: np.ndarray) -> np.ndarray:
        """The choice count of each of these rows (``rows_of``; -1: 0) as of the latest
        choice counted (faded: a choice one half-life before it counts 1/2)."""
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float64)
        known = rows >= 0
        out[known] = self.counts[rows[known]]
        out /= self._now()
        return out

    def _now(self) -> float:
        """What a choice at the latest time counted counts in ``counts`` (1 unfaded)."""
        if (self.reference is not None and self.latest is not None
                and not math.isinf(self.half_life)):
            return self._scale(self.latest, math.inf)
        return 1.0

    def scores(self, histories: Sequence[Sequence[str]], item_ids: Sequence[str] | None,
               borrow: Borrow | None = None, item_rows: np.ndarray | None = None
               ) -> np.ndarray:
        """(len(histories), len(item_ids)): each history's co-visit score of every item,
        zero outside its ``keep`` best. ``borrow``, given the histories' latest items and
        their weights, returns more rows here to read and their weights (a history item's
        text neighbours, ``model.neighbours``). ``item_rows``: ``rows_of(item_ids)``, when
        the caller keeps it (then ``item_ids`` may be None)."""
        at = self.rows_of(() if item_ids is None else item_ids) if item_rows is None \
            else item_rows
        out = np.zeros((len(histories), len(at)), np.float32)
        if not len(self.rows) or not len(at):
            return out
        n = len(self.rows)
        counts = self.counts[:n]
        chosen = counts > 0
        if self.count_prior:
            counts = counts + self.count_prior * self._now()
        norms = np.zeros(n, np.float64)  # of the user's items
        np.divide(1.0, counts ** (1.0 - self.target_exponent), out=norms, where=chosen)
        # an item whose count faded past float32's range adds nothing (its pairs faded
        # with it) and would make every score of the user inf * 0
        norms[norms > FADED_NORM] = 0.0
        target_norms = np.zeros(n, np.float64)  # of the items scored
        np.divide(1.0, counts ** self.target_exponent, out=target_norms, where=chosen)
        known = at >= 0
        every = bool(known.all())
        at_known = at if every else at[known]
        target_at = target_norms[at_known]  # of the items scored, in their order
        rows, weights, bounds = self._read(histories, borrow, norms)
        for r in range(len(histories)):
            start, end = bounds[r], bounds[r + 1]
            if start == end:
                continue
            sims = self._c.weighted_sum(rows[start:end], weights[start:end], n)[at_known] \
                * target_at
            row = out[r]
            if every:
                row[:] = sims
            else:
                row[known] = sims
            if self.keep < len(row):
                top = best_indices(row, self.keep)
                best = row[top]
                row[:] = 0.0
                row[top] = best
        return out

    def _read(self, histories: Sequence[Sequence[str]], borrow: Borrow | None,
              norms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows each history's score sums and their weights, for the whole batch at
        once: history r's are ``[bounds[r]:bounds[r + 1]]``, its own latest items first
        (oldest first, the one chosen k choices back weighted ``recency ** k``), then
        what ``borrow`` lends it."""
        tails = [list(h)[-self.history:] for h in histories]
        lengths = np.fromiter(map(len, tails), np.int64, len(tails))
        flat = [item for tail in tails for item in tail]
        history_of = np.repeat(np.arange(len(tails)), lengths)
        ends = np.cumsum(lengths)
        back = (ends[history_of] - 1 - np.arange(len(flat))).astype(np.float64)
        recency = self.recency ** back
        rows = self.rows_of(flat)
        read = rows >= 0
        rows, weights, of = rows[read], recency[read], history_of[read]
        if borrow is not None and flat:
            more, more_weights, more_of = borrow(flat, recency, history_of)
            rows = np.concatenate([rows, more])
            weights = np.concatenate([weights, more_weights])
            of = np.concatenate([of, more_of])
            order = np.argsort(of, kind="stable")  # each history's own rows, then lent
            rows, weights, of = rows[order], weights[order], of[order]
        bounds = np.searchsorted(of, np.arange(len(tails) + 1))
        return rows, norms[rows] * weights, bounds
