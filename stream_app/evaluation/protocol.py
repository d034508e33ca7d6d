"""How recommendations are judged; eval and replay share it, so they agree by construction.

Prequential: every event of a user (but the first) is judged against the
recommendation emitted after that user's previous event. Leave-one-out: the same,
for each user's last event only (the literature's protocol; seen items were
excluded when the recommendation was made, the whole catalog was ranked). Two
prequential slices: ``new_items`` (the judged item had fewer than ``NEW_BELOW``
earlier events, by any user) and ``new_users`` (the user had fewer than
``NEW_BELOW`` events before the judged one).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

NEW_BELOW = 5  # an item or user with fewer earlier events than this is "new"


def hit_ndcg(ranked: Sequence[str], target: str, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k for one held-out item (a single relevant item)."""
    top = list(ranked[:k])
    if target not in top:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(top.index(target) + 2)


@dataclass
class Score:
    hits: float = 0.0
    ndcg: float = 0.0
    n: int = 0

    def add(self, hit: float, ndcg: float) -> None:
        self.hits += hit
        self.ndcg += ndcg
        self.n += 1

    def as_dict(self) -> dict[str, Any]:
        return {"hr@10": round(self.hits / self.n, 4) if self.n else 0.0,
                "ndcg@10": round(self.ndcg / self.n, 4) if self.n else 0.0, "n": self.n}


@dataclass
class Judgement:
    prequential: Score = field(default_factory=Score)
    leave_one_out: Score = field(default_factory=Score)
    new_items: Score = field(default_factory=Score)  # prequential, item cold at that time
    new_users: Score = field(default_factory=Score)  # prequential, user cold at that time
    missing: int = 0  # events whose previous recommendation never arrived

    def as_dict(self) -> dict[str, Any]:
        return {"prequential": self.prequential.as_dict(),
                "leave_one_out": self.leave_one_out.as_dict(),
                "new_items": self.new_items.as_dict(), "new_users": self.new_users.as_dict(),
                "missing": self.missing}


def judge(events: Iterable[Mapping[str, Any]], recs: Mapping[str, Sequence[str]],
          k: int = 10) -> Judgement:
    """``events`` in stream order; ``recs`` maps event_id -> recommended item ids."""
    events = list(events)
    last = {str(e["user_id"]): n for n, e in enumerate(events)}
    item_count: Counter[str] = Counter()
    user_count: Counter[str] = Counter()
    previous: dict[str, Any] = {}  # user -> event_id of that user's previous event
    out = Judgement()
    for n, e in enumerate(events):
        user, item = str(e["user_id"]), str(e["item_id"])
        item_before, user_before = item_count[item], user_count[user]
        item_count[item] += 1
        user_count[user] += 1
        prev, previous[user] = previous.get(user), e["event_id"]
        if not user_before:  # a first event is not judged
            continue
        ranked = recs.get(prev)
        if ranked is None:
            out.missing += 1
            continue
        hit, ndcg = hit_ndcg(ranked, item, k)
        out.prequential.add(hit, ndcg)
        if n == last[user]:
            out.leave_one_out.add(hit, ndcg)
        if item_before < NEW_BELOW:
            out.new_items.add(hit, ndcg)
        if user_before < NEW_BELOW:
            out.new_users.add(hit, ndcg)
    return out
