"""Synthetic drift: users who switch from one genre to another and later come back.

On the bundled catalog (8 genres), one simulated user per ordered genre pair
(A, B): likes of A every 2 hours, a 3-day break, likes of B, a 2-day break, likes
of A again. Adaptation lag: B events until at least half of the top-10 is B.
Return lag: A events (after coming back) until at least half of the top-10 is A.
"""

from __future__ import annotations

import itertools
import random
import statistics
from typing import Any, Sequence

from stream_app.config import Settings
from stream_app.encoder import Encoder
from stream_app.evaluation.offline import VARIANTS, replay_in_process

HOUR, DAY = 3600.0, 86400.0
T0 = 1_767_225_600.0  # 2026-01-01


def simulate(items: Sequence[dict], first: int = 20, switch: int = 15, back: int = 8,
             seed: int = 3) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """Events in time order, and per user the genres and event ids of each phase."""
    rng = random.Random(seed)
    by_genre: dict[str, list[str]] = {}
    for item in items:
        by_genre.setdefault(item["tags"][0], []).append(item["item_id"])
    events, users = [], {}
    for n, (a, b) in enumerate(itertools.permutations(sorted(by_genre), 2)):
        user = f"drift-{n}"
        pool_a = rng.sample(by_genre[a], first + back)
        pool_b = rng.sample(by_genre[b], switch)
        t = T0 + n * 60.0
        phases = {"a": [], "b": [], "back": []}
        plan = ([("a", i) for i in pool_a[:first]] + [("b", i) for i in pool_b]
                + [("back", i) for i in pool_a[first:]])
        previous = None
        for k, (phase, item) in enumerate(plan):
            if previous is not None and phase != previous:
                t += 3 * DAY if phase == "b" else 2 * DAY
            t += 2 * HOUR
            previous = phase
            event_id = f"{user}-{k}"
            phases[phase].append(event_id)
            events.append({"event_id": event_id, "user_id": user, "type": "like",
                           "item_id": item, "ts": t})
        users[user] = {"from": a, "to": b, **phases}
    events.sort(key=lambda e: e["ts"])
    return events, users


def _lag(event_ids: list[str], recs: dict[str, list[str]], genre_of: dict[str, str],
         genre: str, k: int = 10) -> int:
    """1-based index of the first event after which >= k/2 of the top-k is ``genre``."""
    for n, event_id in enumerate(event_ids, 1):
        top = recs.get(event_id, [])[:k]
        if sum(1 for i in top if genre_of.get(i) == genre) * 2 >= k:
            return n
    return len(event_ids) + 1  # never, within the phase


def summarise(lags: list[int]) -> dict[str, Any]:
    return {"median": statistics.median(lags), "mean": round(statistics.fmean(lags), 2),
            "max": max(lags), "share_within_3": round(sum(1 for x in lags if x <= 3) / len(lags), 3)}


async def drift_check(settings: Settings, encoder: Encoder, items: Sequence[dict],
                      variants: Sequence[str], progress: bool = True) -> list[dict[str, Any]]:
    events, users = simulate(items)
    genre_of = {i["item_id"]: i["tags"][0] for i in items}
    rows = []
    for name in variants:
        run = await replay_in_process(settings.replace(**VARIANTS[name]), encoder, items,
                                      events, f"drift: {name}", progress)
        switch = [_lag(u["b"], run.recs, genre_of, u["to"]) for u in users.values()]
        back = [_lag(u["back"], run.recs, genre_of, u["from"]) for u in users.values()]
        rows.append({"variant": name, "users": len(users),
                     "adaptation_lag": summarise(switch), "return_lag": summarise(back),
                     # per user, for the chart (a lag past its phase's events: never)
                     "adaptation_lags": switch, "return_lags": back,
                     "phase_events": {"adaptation": max(len(u["b"]) for u in users.values()),
                                      "return": max(len(u["back"]) for u in users.values())}})
    return rows
