"""`stream-app bench` on a tiny run: every event kind it floods gets its recommendation
(a text event dated in the future would be dead-lettered and the bench would wait for
ever), and the figures it prints are sane."""

from __future__ import annotations

import json

from stream_app.bench import run_bench
from stream_app.cli import build_parser
from tests.conftest import make_settings


def test_a_tiny_bench_measures_items_text_and_latency(kafka_bootstrap, redis_url, tmp_path,
                                                      capsys):
    s = make_settings(kafka_bootstrap, redis_url, "bench")
    out = tmp_path / "bench.json"
    args = build_parser().parse_args(["bench", "--events", "60", "--text-events", "12",
                                      "--users", "20", "--rate", "40", "--json", str(out)])
    assert run_bench(s, args) == 0
    figures = json.loads(out.read_text())
    assert figures["item_activity_events_per_s"] > 0
    assert figures["text_activity_events_per_s"] > 0
    for key in ("latency_ms_at_50_events_per_s", "latency_ms_at_40_events_per_s"):
        lat = figures[key]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], (key, lat)
    assert "item_activity_events_per_s" in capsys.readouterr().out


def test_the_batch_cost_bench_times_every_size_and_profiles(tmp_path, capsys):
    """In process, on a Redis server of its own: a row per batch size, per-batch
    commands spread over more events in larger batches, and a profile pstats reads."""
    import pstats

    out, prof = tmp_path / "batch.json", tmp_path / "batch.prof"
    args = build_parser().parse_args(["bench", "--batch-sizes", "1,8", "--events", "40",
                                      "--users", "10", "--json", str(out),
                                      "--profile", str(prof)])
    assert args.fn(args) == 0
    figures = json.loads(out.read_text())
    one, eight = figures["sizes"]["1"], figures["sizes"]["8"]
    assert (one["batches"], eight["batches"]) == (40, 20)  # --events, at least 20 batches
    for row in (one, eight):
        assert row["ms_per_batch"] > 0 and row["events_per_s"] > 0
        assert row["redis_commands_per_event"] > 0 and row["redis_cpu_us_per_event"] > 0
        assert row["cpu_ms_per_event"] > 0
        # the lists leave before the batch's counts are written
        assert 0 < row["ms_to_recommendations"] < row["ms_per_batch"]
    assert eight["redis_commands_per_event"] < one["redis_commands_per_event"]
    assert "+" not in figures["model"] and figures["model"] != "bench-trained"
    assert any(name == "process_activity" for _, _, name in pstats.Stats(str(prof)).stats)
    assert "ms/batch" in capsys.readouterr().out


def test_the_batch_cost_bench_ranks_with_a_trained_version(tmp_path, capsys):
    """``--trained``: the timed batches are ranked by a sequence model, named in the report."""
    out = tmp_path / "batch.json"
    args = build_parser().parse_args(["bench", "--batch-sizes", "4", "--events", "20",
                                      "--users", "10", "--trained", "--json", str(out)])
    assert args.fn(args) == 0
    figures = json.loads(out.read_text())
    assert figures["model"] == "bench-trained" and figures["blas_threads"] >= 0
    assert figures["sizes"]["4"]["cpu_ms_per_event"] > 0
    assert "model bench-trained" in capsys.readouterr().out
