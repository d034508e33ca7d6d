"""Each item's nearest items by text, kept in step with a changing catalog.

The co-visit part knows an item from the choices it was in; an item chosen a few times
has few pairs, and one never chosen none. ``smooth`` lends such an item its text
neighbours' co-visit scores, the less the more choices it has (``shrink``): "people who
chose your items chose things like this one". The language model's part of the co-visit
score, and all of it for a new item.

Pure: the table follows the rows a ``CatalogIndex`` reports changed (``changed``) and is
brought up to date on use (``update``), recomputing only the rows a change can move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


class RowsOf(Protocol):
    """What ``borrowed`` needs of a catalog index."""

    def __contains__(self, item_id: object) -> bool: ...

    def row(self, item_id: str) -> int: ...


BLOCK = 512  # rows per matrix product while computing neighbours (2 MB per 1,000 items)
BORROW_MIN = 0.01  # a user's item lends a neighbour's pairs from this share of its weight


@dataclass(frozen=True)
class TextLending:
    """How items borrow their text neighbours' co-visit scores (``Settings``:
    ``covisit_text_*``)."""

    weight: float  # what a never-chosen item borrows; 0: off
    neighbours: int  # nearest items by text it borrows from
    shrink: float  # choices after which it borrows half as much
    max_items: int  # larger catalogs borrow nothing

    def applies(self, n_items: int) -> bool:
        return self.weight > 0 and 0 < n_items <= self.max_items

    def shares(self, counts: np.ndarray) -> np.ndarray:
        """What an item chosen ``counts`` (faded) times borrows of its neighbours' scores
        or lends of their pairs: ``weight * shrink / (shrink + n)``."""
        return (self.weight * self.shrink
                / (self.shrink + np.asarray(counts, np.float64))).astype(np.float32)


def nearest(matrix: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows), k) each row's ``k`` nearest other rows of ``matrix`` by inner product
    (cosine for unit rows), best first, and their inner products. With fewer than k
    other rows the rest point at the row itself with similarity -inf."""
    n = len(matrix)
    rows = np.asarray(rows, np.int64)
    nb = np.repeat(rows[:, None], k, axis=1)
    sim = np.full((len(rows), k), -np.inf, np.float32)
    take = min(k, n - 1)
    if take <= 0 or not len(rows):
        return nb, sim
    whole = np.asarray(matrix, np.float32)
    for a in range(0, len(rows), BLOCK):
        part = rows[a:a + BLOCK]
        s = whole[part] @ whole.T
        s[np.arange(len(part)), part] = -np.inf
        top = np.argpartition(-s, take - 1, axis=1)[:, :take]
        vals = np.take_along_axis(s, top, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        nb[a:a + len(part), :take] = np.take_along_axis(top, order, 1)
        sim[a:a + len(part), :take] = np.take_along_axis(vals, order, 1)
    return nb, sim


class TextNeighbours:
    """The ``k`` nearest items of every catalog row by text vector."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._dirty: set[int] = set()
        self._borrowers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._shares: np.ndarray | None = None
        self.clear()

    def changed(self, rows: Sequence[int]) -> None:
        """Rows whose item or vector changed, or that were emptied (an index watcher).
        Before the first ``update`` (or after ``clear``) nothing is kept: that update
        computes every row, and a catalog too large to borrow keeps no set of rows."""
        if len(self.nb):
            self._dirty.update(int(r) for r in rows)

    def clear(self) -> None:
        """Forget the table (the catalog grew past borrowing); the next ``update``
        computes it whole."""
        self.nb = np.zeros((0, self.k), np.int64)
        self.sim = np.zeros((0, self.k), np.float32)
        self._dirty.clear()
        self._borrowers = self._shares = None

    def update(self, matrix: np.ndarray) -> None:
        """Bring the table up to date with ``matrix`` (the catalog's rows): the changed
        rows, the rows that named one of them, and the rows one of them now enters."""
        n = len(matrix)
        if len(self.nb) == n and not self._dirty:
            return
        self._borrowers = self._shares = None
        old = len(self.nb)
        dirty = np.array(sorted(self._dirty | set(range(min(old, n), n))), np.int64)
        self._dirty.clear()
        if n == 0:
            self.clear()
            return
        if old == 0 or len(dirty) * 4 >= n:
            self.nb, self.sim = nearest(matrix, np.arange(n), self.k)
            return
        keep = min(old, n)
        nb, sim = self.nb[:keep], self.sim[:keep]
        live = dirty[dirty < n]
        # a kept row is redone when its list names a changed row, or a changed row now
        # beats its last neighbour
        stale = np.isin(nb, dirty).any(axis=1)
        if len(live):
            whole = np.asarray(matrix, np.float32)
            cross = whole[:keep] @ whole[live].T
            cross[live[live < keep], np.flatnonzero(live < keep)] = -np.inf
            stale |= (cross > sim[:, -1:]).any(axis=1)
        redo = np.union1d(np.flatnonzero(stale), live).astype(np.int64)
        self.nb = np.concatenate([nb, np.zeros((n - keep, self.k), np.int64)])
        self.sim = np.concatenate([sim, np.zeros((n - keep, self.k), np.float32)])
        if len(redo):
            self.nb[redo], self.sim[redo] = nearest(matrix, redo, self.k)

    def shares(self) -> np.ndarray:
        """(N, k) each neighbour's share of a row's borrowing: its positive cosine, the
        row's summing to 1 (0 where no neighbour reads alike)."""
        if self._shares is None:
            w = np.maximum(self.sim, 0.0)
            self._shares = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        return self._shares

    def borrowers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table reversed, for lending from a sparse score row: item i lends to
        ``items[ptr[i]:ptr[i + 1]]`` with ``weights`` (its share of each one's borrowing:
        a borrower's positive cosines to its neighbours, summing to 1)."""
        if self._borrowers is None:
            n = len(self.nb)
            w = self.shares()
            lender = self.nb.ravel()
            borrower = np.repeat(np.arange(n, dtype=np.int64), self.k)
            weight = w.ravel()
            keep = weight > 0
            lender, borrower, weight = lender[keep], borrower[keep], weight[keep]
            order = np.argsort(lender, kind="stable")
            ptr = np.zeros(n + 1, np.int64)
            np.cumsum(np.bincount(lender, minlength=n), out=ptr[1:])
            self._borrowers = (ptr, borrower[order], weight[order].astype(np.float32))
        return self._borrowers


def smooth(scores: np.ndarray, neighbours: TextNeighbours, share_of: np.ndarray
           ) -> np.ndarray:
    """``scores`` (b, N) co-visit scores of the catalog's rows, each item's plus
    ``share_of`` it (``TextLending.shares`` of its choice count) times the mean of its
    neighbours' scores weighted by their (positive) cosine."""
    if not scores.size:
        return scores
    b, n = scores.shape
    ptr, borrower, share = neighbours.borrowers()
    # co-visit rows are sparse (``keep`` items each): each non-zero score is lent to the
    # items that borrow from its item
    flat = np.flatnonzero(scores.reshape(-1) != 0)  # (faster than np.nonzero)
    rows, cols = np.divmod(flat, n)
    fan = ptr[cols + 1] - ptr[cols]
    total = int(fan.sum())
    if not total:
        return scores
    ends = np.cumsum(fan)
    at = np.repeat(ptr[cols] - (ends - fan), fan) + np.arange(total)
    to = borrower[at]
    out = np.array(scores, np.float32)
    np.add.at(out.reshape(-1), np.repeat(rows, fan) * n + to,
              np.repeat(scores.reshape(-1)[flat], fan) * share[at] * share_of[to])
    return out


def borrowed(tails: Sequence[str], weights: np.ndarray, history_of: np.ndarray,
             index: "RowsOf", neighbours: TextNeighbours, cov_rows: np.ndarray,
             share_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users' latest items (``tails``, every user's one after another, with their
    co-visit ``weights`` and the user each belongs to, ``history_of``) lend each user
    their text neighbours' pairs: each neighbour's co-visit row (``cov_rows``, by catalog
    row; -1: never counted) with its share of the item's weight times the item's
    ``share_of`` (``TextLending.shares`` of its choice count, by catalog row), and the
    user it is lent to, in the order of ``tails``. ``CoVisits.scores``'s ``borrow``."""
    at = np.array([index.row(i) if i in index else -1 for i in tails], np.int64)
    known = at >= 0
    if not known.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64)
    at, weights = at[known], np.asarray(weights, np.float64)[known]
    history_of = np.asarray(history_of, np.int64)[known]
    rows = cov_rows[neighbours.nb[at]]
    lent = (share_of[at] * weights)[:, None] * neighbours.shares()[at]
    # each row read costs a pass over the catalog: a neighbour is read only where it
    # adds at least BORROW_MIN of its user's own item's weight (a much-chosen item lends
    # a negligible share, and most of a dense log's are)
    heaviest = np.full(int(history_of.max()) + 1, -np.inf)
    np.maximum.at(heaviest, history_of, weights)
    keep = (rows >= 0) & (lent >= BORROW_MIN * heaviest[history_of][:, None])
    lent_to = np.broadcast_to(history_of[:, None], rows.shape)
    return rows[keep], lent[keep], lent_to[keep]
