"""The `eval` and `replay` commands: run, print a table, write JSON and Markdown reports."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, Sequence

from stream_app.catalog_files import read_jsonl
from stream_app.config import Settings
from stream_app.demo import bundled
from stream_app.embedded import EmbeddedRedis, redis_reachable
from stream_app.evaluation.charts import (Chart, drift_charts, eval_charts, replay_charts,
                                          write_charts)
from stream_app.evaluation.datasets import load_movielens, repeated
from stream_app.evaluation.drift import drift_check
from stream_app.evaluation.offline import (FINE_TUNED_NAME, METRIC_COLUMNS, RANKERS,
                                           VARIANTS, evaluate, markdown_table)
from stream_app.evaluation.replay import replay
from stream_app.processes import local_system

DRIFT_VARIANTS = ["default", "static: one vector, no decay", "ablation: no decay"]
# what `eval DATASET` runs without --variants: the model with and without the trainer
# against the two baselines (minutes); `--variants all` adds every ablation and SASRec
HEADLINE = ["default", "popularity (decayed, ranker)", "item-kNN (co-occurrence, last 20)",
            FINE_TUNED_NAME]


def eval_encoder(s: Settings) -> Any:
    """The encoder the settings select (``STREAM_APP_ENCODER_BACKEND``), as a worker's,
    cached: one pass per variant, and every text is encoded once for all of them."""
    from stream_app.encoder import CachedEncoder, make_encoder

    return CachedEncoder(make_encoder(s), 1_000_000)


def _write(out: Path, name: str, payload: Any, markdown: str,
           charts: Sequence[Chart] = ()) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    markdown += write_charts(out, name, charts)  # SVGs next to the Markdown, embedded in it
    (out / f"{name}.md").write_text(markdown + "\n")
    print(f"\nreports: {out / name}.json, {out / name}.md"
          + (f" and {len(charts)} charts ({out / name}-*.svg)" if charts else ""))


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    if not args.dataset and not args.drift:
        raise SystemExit("stream-app eval: give a DATASET directory, --drift, or both")
    server = None if redis_reachable(settings.redis()) else EmbeddedRedis().start()
    s = settings.replace(redis_url=server.url) if server else settings
    try:
        encoder = eval_encoder(s)
        if args.dataset:
            _eval_dataset(s, encoder, args)
        if args.drift:
            _eval_drift(s, encoder, args)
    finally:
        if server:
            server.stop()
    return 0


def _eval_dataset(s: Settings, encoder: Any, args: argparse.Namespace) -> None:
    data = load_movielens(args.dataset, args.users)
    known = [*VARIANTS, *RANKERS]
    variants = (known if args.variants == "all" else split_variants(args.variants, known)
                if args.variants else HEADLINE)
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {known}")
    print(f"{data.name}: {len(data.items)} items, {len(data.events)} ratings, "
          f"{len({e['user_id'] for e in data.events})} users", flush=True)
    curves: dict[str, Any] = {}
    rows = asyncio.run(evaluate(s, encoder, data.items, data.events, variants, curves=curves))
    table = markdown_table(rows, METRIC_COLUMNS)
    print(table)
    _write(Path(args.out), f"eval-{data.name}",
           {"dataset": data.name, "rows": rows, "prequential_windows": curves},
           f"# eval {data.name}\n\nfull ranking, seen items excluded; leave-one-out on each "
           f"user's last rating, prequential on every rating\n\n{table}",
           eval_charts(rows, curves))


def split_variants(text: str, known: Sequence[str]) -> list[str]:
    """Comma-separated names; a known name that holds commas ("a, b") stays whole."""
    parts = text.split(",")
    out: list[str] = []
    start = 0
    while start < len(parts):
        for end in range(len(parts), start, -1):  # the longest known name first
            name = ",".join(parts[start:end]).strip()
            if name in known or end == start + 1:
                break
        out.append(name)
        start = end
    return out


def drift_variants(chosen: str | None) -> list[str]:
    """The drift check's variants named in ``--variants`` (names hold commas, so they are
    found, not split); all of them when it names none (e.g. only a dataset's variants)."""
    named = [v for v in DRIFT_VARIANTS if chosen and v in chosen]
    return named or list(DRIFT_VARIANTS)


def _eval_drift(s: Settings, encoder: Any, args: argparse.Namespace) -> None:
    items = list(read_jsonl(bundled("sample_catalog.jsonl")))
    variants = drift_variants(args.variants)
    rows = asyncio.run(drift_check(s, encoder, items, variants))
    table = markdown_table(rows, [
        ("variant", lambda r: r["variant"]), ("users", lambda r: r["users"]),
        *[(f"{label} {stat}", lambda r, key=key, stat=stat: r[key][stat])
          for key, label in (("adaptation_lag", "adaptation lag"), ("return_lag", "return lag"))
          for stat in ("median", "mean", "max", "share_within_3")]])
    print(table)
    _write(Path(args.out), "drift", rows,
           "# synthetic drift\n\nlag: events until at least half of the top-10 is the new "
           "genre (after the switch) or the old one (after coming back)\n\n" + table,
           drift_charts(rows))


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    data = repeated(load_movielens(args.dataset, args.users), args.repeat)
    fine_tune = args.fine_tune
    if settings.kafka_bootstrap_servers:
        result = asyncio.run(replay(settings, data.items, data.events, args.rate,
                                    fine_tune=fine_tune, trainer_url=args.trainer_url))
    else:
        with local_system(settings, trainer=fine_tune) as (_, s, trainer):
            result = asyncio.run(replay(s, data.items, data.events, args.rate,
                                        fine_tune=fine_tune,
                                        trainer_url=trainer.url if trainer else None))
    label = "replay (Kafka, fine-tuned)" if fine_tune else "replay (Kafka, default model)"
    rows: Sequence[dict[str, Any]] = [{"variant": label, **result}]
    table = markdown_table(rows, METRIC_COLUMNS)
    print(table)
    print(f"latency event -> recommendation: {result['latency']}")
    extra = ""
    if result["latency_over_time"]:
        over_time = "latency p50 / p99 ms by stretch of the run: " + "; ".join(
            f"{w['from_min']:g} min: {w.get('p50_ms', '-')} / {w.get('p99_ms', '-')}"
            for w in result["latency_over_time"])
        print(over_time)
        extra += f"\n\n{over_time}"
    if result["dead_letters"] or result["unanswered"]:
        lost = (f"no recommendation for {result['dead_letters'] + result['unanswered']} events: "
                f"{result['dead_letters']} dead-lettered ({result['dead_letter_reasons']}; "
                f"the dead-letter topic has them), {result['unanswered']} unanswered")
        print(lost)
        extra += f"\n\n{lost}"
    if fine_tune:
        extra += f"\n\ntraining: {json.dumps(result['training'])}"
        print(f"training: {json.dumps(result['training'])}")
    _write(Path(args.out), f"replay-{data.name}{'-fine-tuned' if fine_tune else ''}",
           {"dataset": data.name, **result},
           f"# replay {data.name}\n\n{table}\n\nlatency: {result['latency']}{extra}",
           replay_charts(label, result))
    return 0
