"""`stream-app bench --graph`: the graph alone, its queries and its recall measure.

Pure and in process (no Kafka, no Redis): a few thousand synthetic items."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from stream_app.bench_graph import (QUERY_KINDS, graph_queries, measure_graph,
                                    recall_of, run_graph_bench)
from stream_app.bench_scale import synthetic_catalog
from stream_app.config import Settings


def test_queries_are_unit_means_of_one_taste_or_of_two():
    vectors, topic = synthetic_catalog(4000, 64)
    asked = graph_queries(topic, vectors, 50)
    assert set(asked) == set(QUERY_KINDS)
    for qs in asked.values():
        assert qs.shape == (50, 64)
        np.testing.assert_allclose(np.linalg.norm(qs, axis=1), 1.0, rtol=1e-5)
    # a one-taste query sits in its sub-topic: its nearest item is closer than a
    # blended query's nearest (whose best items are far from it)
    one = (asked["one sub-topic"] @ vectors.T).max(axis=1)
    two = (asked["two sub-topics"] @ vectors.T).max(axis=1)
    assert one.mean() > two.mean() + 0.08  # 0.90 against 0.77 here


def test_recall_counts_the_exact_top_k_found_after_re_scoring():
    rows = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9]], np.float32)
    queries = np.array([[1, 0], [0, 1]], np.float32)
    exact = [np.array([0, 1]), np.array([3, 4])]
    # query 0 got both of its best (in any order, plus a worse one); query 1 only rows
    # outside its top 2, and an invalid slot holding one of them
    keys = np.array([[2, 1, 0], [0, 1, 3]])
    valid = np.array([[True, True, True], [True, True, False]])
    recall, none, coverage = recall_of(rows, keys, valid, queries, exact, k=2)
    assert recall == pytest.approx(0.5)
    assert none == 1
    assert coverage == pytest.approx(0.5)  # 2 of 2, then 0 of 2 (row 3's slot is invalid)
    # re-scoring decides which candidates make the top k, not the graph's order
    keys = np.array([[2, 0, 1], [4, 0, 3]])
    valid = np.ones((2, 3), bool)
    assert recall_of(rows, keys, valid, queries, exact, k=2) == (1.0, 0, 1.0)
    # coverage reaches past the top k: a third best row missing from the candidates
    # leaves the top 2 whole and counts against coverage
    deeper = [np.array([0, 1, 2]), np.array([3, 4, 2])]
    keys = np.array([[0, 1, 3], [3, 4, 0]])
    assert recall_of(rows, keys, valid, queries, deeper, k=2) == (1.0, 0, pytest.approx(2 / 3))
    # a query the graph answered with nothing found none
    nothing = np.zeros((2, 3), bool)
    assert recall_of(rows, keys, nothing, queries, exact, k=2) == (0.0, 2, 0.0)


@pytest.mark.parametrize("rows", ["f16", "i8"])
def test_a_small_graph_finds_what_exact_search_finds(rows):
    s = Settings().replace(ann_rows=rows, ann_threads=1)
    figures = measure_graph(s, 3000, 32, 40, [64, 256])
    assert figures["items"] == 3000 and figures["rows"] == rows
    assert figures["graph_bytes"] > 0
    assert figures["lost_items"] < 0.01
    assert set(figures["searches"]) == {f"ef {w}, {k}" for w in (64, 256) for k in QUERY_KINDS}
    for name, r in figures["searches"].items():
        assert r["queries_per_s"] > 0
        assert r["found_none"] == 0, name
    # 100 candidates of 3,000 items, re-scored: the exact top 10 is found
    assert figures["searches"]["ef 256, one sub-topic"]["recall_at_10"] >= 0.99
    assert figures["searches"]["ef 256, one sub-topic"]["coverage_of_50"] >= 0.95


def test_the_command_prints_and_writes_its_figures(tmp_path, capsys, monkeypatch):
    import stream_app.bench_scale as bench_scale

    monkeypatch.setattr(bench_scale, "model_dim", lambda s: 16)
    out = tmp_path / "graph.json"
    args = argparse.Namespace(graph="2000", widths="100", queries=10, json=str(out))
    assert run_graph_bench(Settings().replace(ann_threads=1), args) == 0
    printed = capsys.readouterr().out
    assert "2000 items" in printed and "ef 100, two sub-topics" in printed
    figures = json.loads(out.read_text())["2000"]
    assert figures["dim"] == 16 and figures["searches"]["ef 100, one sub-topic"]
