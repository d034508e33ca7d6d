"""`stream-app eval`: the streaming protocol in-process, through the workers' own Processor.

Same code path as a worker (parse -> state update in Redis -> rank), no Kafka:
records are built with the partition/offset a topic would give them and fed in
event-time order, in micro-batches of ``batch_size``. Baselines in ``RANKERS`` are
rankers of their own (``baselines``), replayed event by event and judged the same way.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.contract import Record
from stream_app.encoder import Encoder
from stream_app.evaluation.baselines import (DecayedPopularity, ItemKNN, Ranker, SASRec,
                                             replay_ranker)
from stream_app.evaluation.feedback import FeedbackSimulator
from stream_app.evaluation.protocol import hit_ndcg, judge
from stream_app.metrics import Metrics
from stream_app.model.sequence import SequenceParams
from stream_app.pipeline import Processor
from stream_app.store import TRAINER_SCOPE, Store, connect
from stream_app.trainer import Trainer
from stream_app.versions import Registry, follow

INF = math.inf

# The model and its ablations, as settings over the defaults (same harness, same data);
# the baselines that are models of their own are RANKERS below.
FINE_TUNED_NAME = "fine-tuned (trainer + simulated feedback)"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "static: one vector, no decay": {"max_interests": 1, "open_threshold": -1.0,
                                     "long_half_life_s": INF, "short_term_weight": 0.0,
                                     "popularity_weight": 0.0, "covisit_weight": 0.0},
    "ablation: no co-visits": {"covisit_weight": 0.0},
    "ablation: no decay": {"long_half_life_s": INF, "short_term_weight": 0.0},
    "ablation: single interest": {"max_interests": 1, "open_threshold": -1.0},
    "ablation: no popularity prior": {"popularity_weight": 0.0},
    # the co-visit part as it was before 2026-11-30's sixth pass
    "ablation: plain co-visits (cosine, never fade, weight 1)": {
        "covisit_target_exponent": 0.5, "covisit_half_life_s": INF, "covisit_weight": 1.0,
        "covisit_count_prior": 0.0, "covisit_text_weight": 0.0},
    # the co-visit part as it was before 2026-12-02's fifth stop
    "ablation: no count prior in co-visits (weight 1)": {"covisit_count_prior": 0.0,
                                                         "covisit_weight": 1.0},
    "ablation: no text in co-visits (items borrow nothing from text neighbours)": {
        "covisit_text_weight": 0.0},
    FINE_TUNED_NAME: {},
    # no text anywhere: items enter the sequence model by ID only, interests do not rank,
    # co-visit scores are the counts' alone
    "fine-tuned, ablation: ID only (no text)": {"sequence_item_text": False,
                                                "interest_weight": 0.0,
                                                "covisit_text_weight": 0.0},
    "fine-tuned, ablation: text only (no ID)": {"sequence_item_ids": False},
}
FINE_TUNED = frozenset({FINE_TUNED_NAME, "fine-tuned, ablation: ID only (no text)",
                        "fine-tuned, ablation: text only (no ID)"})

# Baselines that are rankers of their own (no Redis, no encoder):
# (catalog items, the events, settings) -> Ranker.
SASREC_STREAMING = "SASRec (ID only, retrained every round on all earlier events)"
SASREC_OFFLINE = "SASRec offline (all but each user's last rating, 60 passes; sees the future)"
RANKERS: dict[str, Callable[[Sequence[dict], Sequence[dict], Settings], Ranker]] = {
    "item-kNN (co-occurrence, last 20)":
        lambda items, events, s: ItemKNN(_ids(items), history=20),
    "popularity (decayed, ranker)":
        lambda items, events, s: DecayedPopularity(_ids(items)),
    SASREC_STREAMING:
        lambda items, events, s: SASRec(_ids(items), _sasrec_params(s, items, s.trainer_epochs),
                                        every=s.trainer_batch_size),
    SASREC_OFFLINE:
        lambda items, events, s: SASRec(_ids(items), _sasrec_params(s, items, 60),
                                        train_on=all_but_last(events)),
}


def _ids(items: Sequence[dict]) -> list[str]:
    return [str(i["item_id"]) for i in items]


def _sasrec_params(s: Settings, items: Sequence[dict], epochs: float) -> SequenceParams:
    """The trainer's model shape, a softmax over the whole catalog (the literature's
    SASRec+), ``epochs`` passes."""
    return replace(s.sequence_params(), epochs=epochs,
                   full_softmax_items=max(s.trainer_full_softmax_items, len(items)))


def all_but_last(events: Sequence[dict]) -> list[dict]:
    """``events`` without each user's last one (what leave-one-out judges)."""
    last = {str(e["user_id"]): n for n, e in enumerate(events)}
    return [e for n, e in enumerate(events) if last[str(e["user_id"])] != n]


@dataclass
class Replayed:
    """Recommendations of one pass: event_id -> ranked item ids."""

    recs: dict[str, list[str]]
    seconds: float
    dead_letters: int
    rounds: list[dict[str, Any]] = field(default_factory=list)  # trainer announcements


def to_records(topic: str, values: Iterable[dict[str, Any]], key_field: str,
               partitions: int, offsets: dict[int, int]) -> list[Record]:
    """Records as a keyed topic would hold them (same key -> same partition, in order)."""
    out = []
    for value in values:
        key = str(value[key_field]).encode()
        partition = zlib.crc32(key) % partitions
        offset = offsets.get(partition, -1) + 1
        offsets[partition] = offset
        out.append(Record(topic, partition, offset, float(value.get("ts", 0.0)), key,
                          json.dumps(value).encode()))
    return out


async def replay_in_process(settings: Settings, encoder: Encoder, items: Sequence[dict],
                            events: Sequence[dict], label: str = "",
                            progress: bool = True, fine_tune: bool = False) -> Replayed:
    """Catalog, then every event, through a Processor on its own Redis key prefix.

    ``fine_tune``: a Trainer learns from the events and from feedback simulated on the
    lists shown. As in a deployment, a round trains (in its own process) while the
    stream goes on, served by the version before it; the Processor follows the registry
    when the next round is due, so which events a version serves does not depend on how
    fast the machine trains: one round's events after the round began.
    """
    # its own keys; no per-user history (for the console), which a replay never reads
    s = settings.replace(key_prefix=f"{settings.key_prefix}-eval-{uuid.uuid4().hex[:8]}",
                         user_history=0)
    client = connect(s.redis())
    store = Store.for_settings(client, s)
    catalog = Catalog.for_settings(store, encoder.version, encoder.dim, s)
    processor = Processor(s, store, encoder, catalog, Metrics())
    registry = Registry(client, s.key_prefix, encoder.version)
    training: asyncio.Task | None = None  # the round under way
    trainer: Trainer | None = None
    try:
        item_offsets: dict[int, int] = {}
        for start in range(0, len(items), 512):
            await processor.process_items(to_records(s.topic_items, items[start:start + 512],
                                                     "item_id", s.topic_partitions, item_offsets))
        trainer = await _trainer(s, client, encoder, registry) if fine_tune else None
        simulator = FeedbackSimulator(s.max_feedback_items)
        recs: dict[str, list[str]] = {}
        rounds: list[dict[str, Any]] = []
        dead = 0
        offsets: dict[int, int] = {}
        feedback_offsets: dict[int, int] = {}
        started = time.perf_counter()
        with tqdm(total=len(events), desc=label or "events", unit="event",
                  disable=not progress) as bar:
            for start in range(0, len(events), s.batch_size):
                chunk = events[start:start + s.batch_size]
                records = to_records(s.topic_activity, chunk, "user_id", s.topic_partitions,
                                     offsets)
                out = await processor.process_activity(records)
                answers = [fb for event in chunk for fb in simulator.on_event(event)]
                for _, rec in out.recommendations:
                    recs[rec["event_id"]] = [i["item_id"] for i in rec["items"]]
                    answers += simulator.on_recommendation(rec["event_id"],
                                                           recs[rec["event_id"]])
                dead += len(out.rejected)
                if trainer is not None:
                    feedback = to_records(s.topic_feedback, answers, "user_id",
                                          s.topic_partitions, feedback_offsets)
                    await trainer.observe(feedback + records)
                    if trainer.due():
                        if training is not None:
                            rounds.append(await training)
                            await follow(catalog, registry)
                        training = asyncio.create_task(trainer.round())
                bar.update(len(chunk))
        if training is not None:
            rounds.append(await training)
        return Replayed(recs, time.perf_counter() - started, dead, rounds)
    finally:
        if training is not None and not training.done():  # failed on the way
            training.cancel()
            await asyncio.gather(training, return_exceptions=True)
        if trainer is not None:
            trainer.close()  # its training process too
        await store.delete_prefix()
        await client.aclose()


async def _trainer(s: Settings, client: Any, encoder: Encoder, registry: Registry) -> Trainer:
    """A trainer with the batch-size rule only: in-process there is no wall clock to wait on."""
    s = s.replace(trainer_max_wait_s=INF)
    store = Store.for_settings(client, s, scope=TRAINER_SCOPE)
    trainer = Trainer(s, store, encoder,
                      Catalog.for_settings(store, encoder.version, encoder.dim, s),
                      registry, Metrics())
    await trainer.start()
    return trainer


async def evaluate(settings: Settings, encoder: Encoder, items: Sequence[dict],
                   events: Sequence[dict], variants: Sequence[str],
                   progress: bool = True,
                   curves: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each variant over the same data; the prequential and leave-one-out scores.

    ``curves``, when given, gets each variant's ``prequential_windows`` (for the charts)."""
    rows = []
    for name in variants:
        if name in RANKERS:
            run = run_ranker(RANKERS[name](items, events, settings), events, name, progress)
        else:
            run = await replay_in_process(settings.replace(**VARIANTS[name]), encoder, items,
                                          events, name, progress,
                                          fine_tune=name in FINE_TUNED)
        if curves is not None:
            curves[name] = prequential_windows(events, run.recs)
        rows.append({"variant": name, **judge(events, run.recs).as_dict(),
                     "events_per_s": round(len(events) / run.seconds, 1),
                     "dead_letters": run.dead_letters,
                     **({"training": training_summary(run.rounds),
                        "training_rounds": [round_row(r) for r in run.rounds]}
                       if run.rounds else {})})
    return rows


def prequential_windows(events: Sequence[dict], recs: dict[str, Sequence[str]],
                        windows: int = 100, k: int = 10) -> dict[str, Any]:
    """The prequential hits of ``judge`` in stream order, summed over ``windows`` runs of
    consecutive events of (nearly) equal length: each window's event times, events,
    judged events, HR@k hits and NDCG@k sum. Over all windows they add up to ``judge``'s
    prequential figures (the same rule: each user's event against the list after that
    user's previous one; first events and missing lists not judged)."""
    n = min(windows, len(events))
    bounds = [round(w * len(events) / n) for w in range(n + 1)] if n else [0]
    previous: dict[str, Any] = {}
    out = []
    for w in range(n):
        judged, hits, ndcg = 0, 0.0, 0.0
        chunk = events[bounds[w]:bounds[w + 1]]
        for e in chunk:
            user = str(e["user_id"])
            prev, previous[user] = previous.get(user), e["event_id"]
            ranked = recs.get(prev) if prev is not None else None
            if ranked is None:
                continue
            hit, gain = hit_ndcg(ranked, str(e["item_id"]), k)
            judged, hits, ndcg = judged + 1, hits + hit, ndcg + gain
        out.append({"first_ts": float(chunk[0].get("ts", 0.0)),
                    "last_ts": float(chunk[-1].get("ts", 0.0)), "events": len(chunk),
                    "judged": judged, "hits": int(hits), "ndcg": round(ndcg, 4)})
    return {"k": k, "windows": out}


def run_ranker(ranker: Ranker, events: Sequence[dict], label: str = "",
               progress: bool = True) -> Replayed:
    """Every event through a ranker, in stream order (``replay_ranker``), timed."""
    started = time.perf_counter()
    with tqdm(events, desc=label or "events", unit="event", disable=not progress) as bar:
        recs = replay_ranker(ranker, bar)
    return Replayed(recs, time.perf_counter() - started, 0)


def round_row(r: dict[str, Any]) -> dict[str, Any]:
    """One round in a report: its decision, blend and held-out NDCG@10s."""
    return {"version": r["version"], "promoted": r["promoted"],
            "reverted_to": r.get("reverted_to"), "seconds": r["round_seconds"],
            "blend": r["training"].get("blend"), "loss": r["training"].get("loss"),
            **{f"ndcg_{k}": v["ndcg@10"] for k, v in r["heldout"].items()}}


def training_summary(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the trainer did during a run: rounds, promotions, time, last held-out scores."""
    if not rounds:
        return {"rounds": 0}
    promoted = [r for r in rounds if r["promoted"]]
    seconds = sum(r["round_seconds"] for r in rounds)
    examples = sum(r["examples"]["train"] + r["examples"]["heldout"] for r in rounds)
    return {"rounds": len(rounds), "promoted": len(promoted),
            "refused": len(rounds) - len(promoted),
            "reverted_to_encoder": sum(1 for r in rounds if r.get("reverted_to")),
            "round_seconds_mean": round(seconds / len(rounds), 2),
            "examples_per_s": round(examples / seconds, 1) if seconds else None,
            "positions_per_s": round(sum(r["training"].get("positions", 0) for r in rounds)
                                     / max(1e-9, sum(r["training"]["seconds"]
                                                     for r in rounds)), 1),
            "last_version": promoted[-1]["version"] if promoted else None,
            "last_blend": rounds[-1]["training"].get("blend"),
            "last_heldout": rounds[-1]["heldout"]}


def markdown_table(rows: Sequence[dict[str, Any]],
                   columns: Sequence[tuple[str, Callable[[dict], Any]]]) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(str(f(r)) for _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


METRIC_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("variant", lambda r: r["variant"]),
    ("LOO HR@10", lambda r: r["leave_one_out"]["hr@10"]),
    ("LOO NDCG@10", lambda r: r["leave_one_out"]["ndcg@10"]),
    ("preq HR@10", lambda r: r["prequential"]["hr@10"]),
    ("preq NDCG@10", lambda r: r["prequential"]["ndcg@10"]),
    ("new items HR@10", lambda r: r["new_items"]["hr@10"]),
    ("new users HR@10", lambda r: r["new_users"]["hr@10"]),
    ("events/s", lambda r: r["events_per_s"]),
]
