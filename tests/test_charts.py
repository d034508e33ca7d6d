"""Charts in the eval and replay reports: well-formed SVG with the series, axes and legend,
written next to the Markdown and linked from it; the series they plot agree with the
reported figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stream_app.config import Settings
from stream_app.evaluation import commands
from stream_app.evaluation.charts import (Series, drift_charts, eval_charts, histogram_chart,
                                          line_chart, nice_ticks, replay_charts, rounds_chart,
                                          time_ticks)
from stream_app.evaluation.offline import (FINE_TUNED_NAME, RANKERS, evaluate,
                                           prequential_windows)
from stream_app.evaluation.protocol import judge
from stream_app.evaluation.replay import latency_distribution, latency_over_time
from tests.test_evaluation import _tiny
from tests.fakes import FakeEncoder

SVG = "{http://www.w3.org/2000/svg}"
KNN, POPULARITY = "item-kNN (co-occurrence, last 20)", "popularity (decayed, ranker)"
CANDIDATE = "candidate (the round's new version)"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG}svg"
    assert "nan" not in svg and "inf" not in svg.lower()
    return root


def _texts(root: ET.Element, cls: str | None = None) -> list[str]:
    groups = [root] if cls is None else [g for g in root.iter(f"{SVG}g")
                                         if g.get("class") == cls]
    return ["".join(t.itertext()) for g in groups for t in g.iter(f"{SVG}text")]


def _series(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("class") == "series"}


def test_a_line_chart_has_its_series_axes_and_legend():
    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp()
    day = 86400.0
    series = [Series("default", [(t0 + n * day, 0.1 + n / 100) for n in range(40)]),
              Series("item-kNN <co-occurrence> & co", [(t0 + n * day, 0.2) for n in range(40)],
                     marker="circle", notes=[f"day {n}" for n in range(40)])]
    svg = line_chart(series, "Prequential HR@10", "event time", "HR@10", x_time=True,
                     y_range=(0.0, None))
    assert svg == line_chart(series, "Prequential HR@10", "event time", "HR@10",
                             x_time=True, y_range=(0.0, None))  # deterministic
    root = _parse(svg)
    assert set(_series(root)) == {"default", "item-kNN <co-occurrence> & co"}
    for group in _series(root).values():
        (path,) = group.iter(f"{SVG}path")
        assert path.get("d").startswith("M") and path.get("d").count("L") == 39
    assert len(list(_series(root)["item-kNN <co-occurrence> & co"].iter(f"{SVG}circle"))) == 40
    legend = _texts(root, "legend-entry")
    assert legend == ["default", "item-kNN <co-occurrence> & co"]
    x_axis, y_axis = _texts(root, "x-axis"), _texts(root, "y-axis")
    assert x_axis[-1] == "event time (UTC)" and y_axis[-1] == "HR@10"
    assert len(x_axis) >= 4 and all(re.fullmatch(r"\d{4}-\d\d-\d\d", t) for t in x_axis[:-1])
    assert float(y_axis[0]) == 0.0 and len(y_axis) >= 4
    assert "Prequential HR@10" in _texts(root)
    assert root.find(f"{SVG}title").text == "Prequential HR@10"
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline


def test_a_histogram_with_its_cdf_on_a_right_axis():
    svg = histogram_chart([0, 10, 20, 30], [5, 0, 2], "Latency", "latency (ms)", "events",
                          cdf=[(0, 0.0), (15, 0.7), (30, 1.0)], note="7 events")
    root = _parse(svg)
    bars = [r for g in root.iter(f"{SVG}g") if g.get("class") == "bars"
            for r in g.iter(f"{SVG}rect")]
    assert len(bars) == 2  # an empty bin draws nothing
    assert _texts(root, "y-axis-right")[-1] == "cumulative share"
    assert "100%" in _texts(root, "y-axis-right")
    assert _texts(root, "legend-entry") == ["events", "cumulative share (right axis)"]
    assert _texts(root, "x-axis")[-1] == "latency (ms)"
    assert "7 events" in _texts(root)


def test_ticks_are_round_and_cover_the_data():
    ticks, decimals = nice_ticks(0.013, 0.118)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.118 and decimals == 2
    assert all(round(b - a, 9) == round(ticks[1] - ticks[0], 9) for a, b in zip(ticks, ticks[1:]))
    assert nice_ticks(1, 7, integer=True)[0] == [1, 2, 3, 4, 5, 6, 7]
    assert nice_ticks(5.0, 5.0)[0][0] < 5.0 < nice_ticks(5.0, 5.0)[0][-1]  # no zero span
    lo = datetime(1996, 3, 29, tzinfo=timezone.utc).timestamp()
    hi = datetime(2018, 9, 24, tzinfo=timezone.utc).timestamp()
    years, label, note = time_ticks(lo, hi)
    assert [label(t) for t in years] == ["2000", "2005", "2010", "2015"] and note == "UTC"
    minutes, label, note = time_ticks(1e9, 1e9 + 300)
    assert all(lo <= t <= 1e9 + 300 for t in minutes) and len(minutes) >= 3
    assert note == "UTC, 2001-09-09" and label(minutes[0]).count(":") == 1


def test_the_windows_add_up_to_the_reported_prequential_figures():
    items, events = _tiny(10, 6)
    rows = asyncio.run(evaluate(Settings.from_env({}), FakeEncoder(), items, events,
                                list(RANKERS)[:2], progress=False, curves=(curves := {})))
    assert list(curves) == list(RANKERS)[:2]
    for row in rows:
        windows = curves[row["variant"]]["windows"]
        assert sum(w["events"] for w in windows) == len(events)
        assert [w["last_ts"] for w in windows] == sorted(w["last_ts"] for w in windows)
        judged, hits = sum(w["judged"] for w in windows), sum(w["hits"] for w in windows)
        assert judged == row["prequential"]["n"] == 50
        assert round(hits / judged, 4) == row["prequential"]["hr@10"]
        assert round(sum(w["ndcg"] for w in windows) / judged, 4) == pytest.approx(
            row["prequential"]["ndcg@10"], abs=2e-4)
    # missing lists and first events are not judged, as in `judge`
    events = [{"event_id": "1", "user_id": "u", "item_id": "a", "ts": 1.0},
              {"event_id": "2", "user_id": "u", "item_id": "b", "ts": 2.0},
              {"event_id": "3", "user_id": "u", "item_id": "c", "ts": 3.0}]
    windows = prequential_windows(events, {"1": ["b"]}, windows=2)["windows"]
    assert [(w["events"], w["judged"], w["hits"]) for w in windows] == [(2, 1, 1), (1, 0, 0)]
    assert judge(events, {"1": ["b"]}).prequential.n == 1
    assert prequential_windows([], {}) == {"k": 10, "windows": []}


def test_latency_distribution_keeps_every_event():
    values = [0.001 * n for n in range(1, 201)] + [5.0, 9.0]  # seconds; two slow ones
    dist = latency_distribution(values)
    hist = dist["histogram"]
    assert sum(hist["counts"]) + hist["above"] == len(values) and hist["above"] >= 2
    assert len(hist["edges_ms"]) == len(hist["counts"]) + 1
    assert dist["quantiles_ms"] == sorted(dist["quantiles_ms"]) and len(dist["quantiles_ms"]) == 101
    assert dist["quantiles_ms"][-1] == 9000.0
    assert latency_distribution([]) == {}


def test_latency_over_time_shows_where_a_run_lost_its_latency():
    """Ten minutes sent at 10 events/s; answers take 20 ms, except in minutes 6-7 (2 s)."""
    sent = {f"e{n}": 1000.0 + n / 10 for n in range(6000)}
    emitted = {e: t + (2.0 if 360 <= t - 1000 < 480 else 0.02) for e, t in sent.items()
               if e != "e5"}  # one never answered: not counted
    windows = latency_over_time(sent, emitted, stretches=10)
    assert [w["from_min"] for w in windows] == [float(n) for n in range(10)]
    assert sum(w["events"] for w in windows) == len(emitted)
    assert [w["p50_ms"] for w in windows] == [20.0] * 6 + [2000.0] * 2 + [20.0] * 2
    cut = {e: t for e, t in emitted.items() if sent[e] - 1000 < 480}  # no lists after 8 min
    assert [w["events"] for w in latency_over_time(sent, cut, stretches=10)][-2:] == [0, 0]
    assert [w.get("p50_ms") for w in latency_over_time(sent, {}, stretches=3)] == [None] * 3
    assert latency_over_time({}, {}) == []


def test_empty_runs_give_no_charts_and_one_point_still_draws():
    assert eval_charts([], {}) == [] and drift_charts([]) == []
    assert replay_charts("replay", {"latency_distribution": {}, "prequential_windows":
                                    {"k": 10, "windows": []}}) == []
    one = rounds_chart([{"version": "v1", "promoted": True, "ndcg_candidate": 0.2,
                         "ndcg_current": 0.1, "ndcg_base": 0.1}])
    root = _parse(one.svg)
    assert "promoted (1)" in _texts(root, "legend-entry")
    flat = line_chart([Series("flat", [(3.0, 0.5)])], "t", "x", "y")
    assert len(list(_parse(flat).iter(f"{SVG}circle"))) == 1


def _movielens(root: Path, users: int = 10, per_user: int = 6) -> Path:
    """A tiny ml-latest-small layout (the rows of ``_tiny``)."""
    items, events = _tiny(users, per_user)
    data = root / "ml-tiny"
    data.mkdir()
    (data / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i['item_id'][1:]},Movie {i['item_id'][1:]} (1999),Drama|Comedy\n" for i in items))
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{e['user_id'][1:]},{e['item_id'][1:]},4.0,{int(e['ts'])}\n" for e in events))
    return data


def _linked(markdown: Path) -> list[Path]:
    """The images the Markdown embeds, resolved against its own directory."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown.read_text())
    assert links and all(not Path(link).is_absolute() and "/" not in link for link in links)
    return [markdown.parent / link for link in links]


def _eval_args(data: Path, out: Path, variants: str) -> argparse.Namespace:
    return argparse.Namespace(dataset=str(data), users=None, variants=variants, out=str(out))


def test_eval_writes_charts_next_to_its_markdown_and_links_them(tmp_path):
    out = tmp_path / "reports"
    commands._eval_dataset(Settings.from_env({}), FakeEncoder(),
                           _eval_args(_movielens(tmp_path), out, f"{KNN},{POPULARITY}"))
    svgs = _linked(out / "eval-ml-tiny.md")
    assert [p.name for p in svgs] == ["eval-ml-tiny-prequential-hr.svg"]
    assert sorted(p.name for p in out.glob("*.svg")) == [p.name for p in svgs]
    root = _parse(svgs[0].read_text())
    assert set(_series(root)) == {KNN, POPULARITY}
    assert _texts(root, "legend-entry") == [KNN, POPULARITY]
    assert _texts(root, "x-axis")[-1].startswith("event time (UTC")
    report = json.loads((out / "eval-ml-tiny.json").read_text())
    assert set(report["prequential_windows"]) == {KNN, POPULARITY}
    for row in report["rows"]:  # the figures in the table are what the chart sums to
        windows = report["prequential_windows"][row["variant"]]["windows"]
        assert sum(w["judged"] for w in windows) == row["prequential"]["n"] == 50
        assert round(sum(w["hits"] for w in windows) / 50, 4) == row["prequential"]["hr@10"]


@pytest.mark.integration
def test_eval_with_the_trainer_charts_its_rounds(tmp_path, redis_url):
    out = tmp_path / "reports"
    s = Settings.from_env({}).replace(redis_url=redis_url, key_prefix="satest-charts",
                                      batch_size=16, trainer_batch_size=60)
    commands._eval_dataset(s, FakeEncoder(), _eval_args(_movielens(tmp_path, 20, 12), out,
                                                        f"default,{FINE_TUNED_NAME}"))
    svgs = {p.name: p for p in _linked(out / "eval-ml-tiny.md")}
    assert set(svgs) == {"eval-ml-tiny-prequential-hr.svg", "eval-ml-tiny-trainer-rounds.svg"}
    assert set(_series(_parse(svgs["eval-ml-tiny-prequential-hr.svg"].read_text()))) == {
        "default", FINE_TUNED_NAME}
    rounds = _parse(svgs["eval-ml-tiny-trainer-rounds.svg"].read_text())
    (row,) = [r for r in json.loads((out / "eval-ml-tiny.json").read_text())["rows"]
              if r["variant"] == FINE_TUNED_NAME]
    legend = _texts(rounds, "legend-entry")
    assert CANDIDATE in legend
    promoted = row["training"]["promoted"]
    assert (f"promoted ({promoted})" in legend) == (promoted > 0)
    candidate = _series(rounds)[CANDIDATE]
    (path,) = candidate.iter(f"{SVG}path")
    assert path.get("d").count("L") == row["training"]["rounds"] - 1
    assert _texts(rounds, "x-axis")[-1] == "round"


@pytest.mark.integration
def test_eval_drift_charts_the_lag_per_variant(tmp_path, redis_url):
    out = tmp_path / "reports"
    s = Settings.from_env({}).replace(redis_url=redis_url, key_prefix="satest-charts-drift")
    commands._eval_drift(s, FakeEncoder(), argparse.Namespace(variants="default", out=str(out)))
    (svg,) = _linked(out / "drift.md")
    assert svg.name == "drift-lag.svg"
    root = _parse(svg.read_text())
    assert set(_series(root)) == {"default: after the switch", "default: after coming back"}
    y_axis = _texts(root, "y-axis")
    assert y_axis[-1] == "share of users adapted" and "100%" in y_axis
    (row,) = json.loads((out / "drift.json").read_text())
    assert len(row["adaptation_lags"]) == len(row["return_lags"]) == row["users"] == 56
    assert row["adaptation_lag"]["max"] == max(row["adaptation_lags"])
    assert row["phase_events"] == {"adaptation": 15, "return": 8}


def test_a_drift_line_ends_below_100_percent_when_some_users_never_adapt():
    rows = [{"variant": "default", "users": 4, "adaptation_lags": [1, 2, 2, 16],
             "return_lags": [9, 9, 9, 9], "phase_events": {"adaptation": 15, "return": 8}}]
    (chart,) = drift_charts(rows)
    assert chart.slug == "lag"
    root = _parse(chart.svg)
    series = _series(root)
    assert set(series) == {"default: after the switch", "default: after coming back"}
    assert _texts(root, "y-axis")[:-1] == ["0%", "20%", "40%", "60%", "80%", "100%"]
    (switch,) = series["default: after the switch"].iter(f"{SVG}path")
    (back,) = series["default: after coming back"].iter(f"{SVG}path")
    y = {t: float(v) for t, v in zip(_texts(root, "y-axis"), [
        line.get("y1") for line in root.iter(f"{SVG}line") if line.get("class") == "grid"])}
    levels = lambda path: [float(v) for v in re.findall(r"V([\d.]+)", path.get("d"))]  # noqa: E731
    assert levels(switch)[-1] == pytest.approx(y["0%"] + (y["100%"] - y["0%"]) * 0.75)
    assert set(levels(back)) == {y["0%"]}  # never, within the phase


def test_replay_writes_latency_prequential_and_round_charts(tmp_path, monkeypatch):
    """The command's wiring (the replay itself, through Kafka, is tests/test_replay.py):
    a result of the shape `replay` returns gives three charts, linked."""
    data = _movielens(tmp_path)
    rounds = [{"version": f"v{n}", "promoted": n != 2, "reverted_to": None, "seconds": 1.0,
               "blend": 0.5, "loss": 1.0, "ndcg_candidate": 0.1 + n / 50,
               "ndcg_current": 0.1, "ndcg_base": 0.08} for n in range(1, 5)]

    async def fake_replay(s, items, events, rate, fine_tune=False, trainer_url=None):
        recs = {e["event_id"]: [f"i{n}" for n in range(10)] for e in events}
        return {"events": len(events), "recommendations": len(events), "dead_letters": 0,
                "dead_letter_reasons": {}, "unanswered": 0,
                **judge(events, recs).as_dict(), "events_per_s": 100.0,
                "latency": {"p50_ms": 20.0},
                "latency_over_time": [{"from_min": 0.0, "events": len(events), "p50_ms": 20.0,
                                       "p95_ms": 30.0, "p99_ms": 40.0}],
                "latency_distribution": latency_distribution(
                    [0.005 + (n % 17) / 500 for n in range(len(events))]),
                "prequential_windows": prequential_windows(events, recs),
                "training": {"rounds": 4, "promoted": 3}, "training_rounds": rounds}

    monkeypatch.setattr(commands, "replay", fake_replay)
    out = tmp_path / "reports"
    commands.run_replay(Settings.from_env({}).replace(kafka_bootstrap_servers="kafka:9092"),
                        argparse.Namespace(dataset=str(data), users=None, repeat=1, rate=0.0,
                                           fine_tune=True, trainer_url=None, out=str(out)))
    svgs = {p.name: p for p in _linked(out / "replay-ml-tiny-fine-tuned.md")}
    assert set(svgs) == {f"replay-ml-tiny-fine-tuned-{c}.svg"
                         for c in ("prequential-hr", "latency", "trainer-rounds")}
    latency = _parse(svgs["replay-ml-tiny-fine-tuned-latency.svg"].read_text())
    assert _texts(latency, "x-axis")[-1] == "latency (ms)"
    assert _texts(latency, "legend-entry") == ["events", "cumulative share (right axis)"]
    rounds_svg = _parse(svgs["replay-ml-tiny-fine-tuned-trainer-rounds.svg"].read_text())
    assert {"promoted (3)", "refused (1)"} <= set(_texts(rounds_svg, "legend-entry"))
    report = json.loads((out / "replay-ml-tiny-fine-tuned.json").read_text())
    assert report["training_rounds"] == rounds
    assert math.isclose(sum(report["latency_distribution"]["histogram"]["counts"])
                        + report["latency_distribution"]["histogram"]["above"], 60)
