"""`stream-app bench --relay`: the three relays on a tiny flood report sane figures, and
the worker's Faust app carries the tuned settings the relay measures."""

from __future__ import annotations

import asyncio
import math

from stream_app import bench_relay
from stream_app.app import new_app
from stream_app.cli import build_parser
from stream_app.config import Settings
from stream_app.kafka_transport import QuietMonitor


def test_three_relays_on_a_tiny_flood(kafka_bootstrap):
    s = Settings.from_env({}).replace(kafka_bootstrap_servers=kafka_bootstrap,
                                      topic_partitions=2)
    results = asyncio.run(bench_relay.measure_relays(s, events=300, rate=100.0,
                                                     latency_s=1.0))
    assert results["events"] == 300 and results["partitions"] == 2
    assert results["settings"]["batch_size"] == s.batch_size
    for kind in bench_relay.KINDS:
        r = results[kind]
        assert r["kind"] == kind and r["events"] == 300
        assert 0 < r["events_per_s"] < math.inf and r["seconds"] > 0
        assert r["latency_rate"] == 100.0
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 10_000
    raw = results["raw"]["events_per_s"]
    assert results["ratios"] == {k: round(results[k]["events_per_s"] / raw, 3)
                                 for k in ("faust", "tuned")}
    bench_relay.report(results)  # prints without failing


def test_flood_rate_and_percentiles():
    assert bench_relay.flood_rate([10.0, 10.5, 11.0]) == (2.0, 1.0)
    lat = bench_relay.percentiles([float(v) for v in range(1, 101)])
    assert lat == {"p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert bench_relay.percentiles([]) == {}


def test_worker_app_is_tuned_and_the_baseline_is_not():
    s = Settings.from_env({}).replace(kafka_bootstrap_servers="127.0.0.1:9")
    app = new_app(s, "tuned-check")
    assert app.conf.Monitor is QuietMonitor
    assert app.conf.producer_max_batch_size == s.kafka_producer_batch_bytes
    assert app.conf.producer_linger == s.kafka_producer_linger_ms / 1000.0
    assert new_app(s.replace(faust_event_stats=True), "stats").conf.Monitor is not QuietMonitor
    base = bench_relay.baseline_app(s, "baseline-check")
    assert base.conf.Monitor is not QuietMonitor and base.conf.producer_max_batch_size == 16384


def test_quiet_monitor_keeps_what_faust_reads():
    """Faust's slow-processing check reads when each partition's stream last took an
    event; the per-event counters are skipped."""
    from faust.types import TP

    monitor = QuietMonitor()
    tp = TP("t", 0)
    assert monitor.on_stream_event_in(tp, 5, None, None) is None  # type: ignore[arg-type]
    assert tp in monitor.stream_inbound_time
    assert monitor.events_total == 0 and monitor.messages_received_total == 0


def test_bench_options():
    args = build_parser().parse_args(["bench", "--relay", "--rate", "half"])
    assert args.relay is True and args.rate == "half"
    assert build_parser().parse_args(["bench", "--rate", "900"]).rate == "900"
