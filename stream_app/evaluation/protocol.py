"""How recommendations are judged; eval and replay share it, so they agree by construction.

Prequential: every event of a user (but the first) is judged against the
recommendation emitted after that user's previous event. Leave-one-out: the same,
for each user's last event only (the literature's protocol; seen items were
excluded when the recommendation was made, the whole catalog was ranked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence


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
    missing: int = 0  # events whose previous recommendation never arrived

    def as_dict(self) -> dict[str, Any]:
        return {"prequential": self.prequential.as_dict(),
                "leave_one_out": self.leave_one_out.as_dict(), "missing": self.missing}


def judge(events: Iterable[Mapping[str, Any]], recs: Mapping[str, Sequence[str]],
          k: int = 10) -> Judgement:
    """``events`` in stream order; ``recs`` maps event_id -> recommended item ids."""
    by_user: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        by_user.setdefault(str(e["user_id"]), []).append(e)
    out = Judgement()
    for user_events in by_user.values():
        for n in range(1, len(user_events)):
            ranked = recs.get(user_events[n - 1]["event_id"])
            if ranked is None:
                out.missing += 1
                continue
            hit, ndcg = hit_ndcg(ranked, str(user_events[n]["item_id"]), k)
            out.prequential.add(hit, ndcg)
            if n == len(user_events) - 1:
                out.leave_one_out.add(hit, ndcg)
    return out
