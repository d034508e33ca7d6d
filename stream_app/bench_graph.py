"""`stream-app bench --graph N[,N...]`: the nearest-neighbour graph alone, in process.

A synthetic catalog of N vectors (``bench_scale.synthetic_catalog``) stored the way a
large catalog keeps its rows (``ann_rows``), one graph built with the settings' ``ann_*``
parameters, and two kinds of interest-like queries:

- *one sub-topic*: the mean of 3 items of one sub-topic (a user with one taste);
- *two sub-topics*: the mean of 3 items of each of two random sub-topics (an interest
  that blends two tastes: its best items are far from it, and many are about as far).

For each search width (ef): queries/s on one thread, and recall@10: how many of the
exact top 10 (over every stored row, read as float32) are among the ``ann_candidates``
the graph gives once re-scored exactly, as a worker re-scores them; how many queries
found none of their top 10 (the search ended in another region of the graph); and the
share of the exact best 50 among the candidates (a served list also weighs popularity
and co-visits, so its items can sit deeper in the similarity order than the top 10).
The served lists of ``bench --items`` add the popular pool and co-visited items to
these candidates and rank with interest shares and the prior; this isolates the graph.
It also reports the share of sampled items that a search for their own vector misses
(``ann.unreachable``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Sequence

import numpy as np

from stream_app.config import Settings

QUERY_KINDS = ("one sub-topic", "two sub-topics")
COVERAGE = 50  # the exact best rows whose share among the candidates is reported
SELF_SAMPLE = 10_000  # items searched for by their own vector (``ann.unreachable``)
ITEMS_PER_TASTE = 3


def graph_queries(topic: np.ndarray, vectors: np.ndarray, count: int, seed: int = 1
                  ) -> dict[str, np.ndarray]:
    """``count`` unit queries of each kind (``QUERY_KINDS``) over items grouped by
    ``topic`` (each item's sub-topic)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[order], np.arange(int(topic.max()) + 2))
    filled = np.flatnonzero(np.diff(bounds) > 0)
    out: dict[str, list[np.ndarray]] = {kind: [] for kind in QUERY_KINDS}
    for _ in range(count):
        a, b = rng.choice(filled, 2)
        picks = [rng.choice(order[bounds[t]:bounds[t + 1]], ITEMS_PER_TASTE) for t in (a, b)]
        for kind, items in zip(QUERY_KINDS, (picks[0], np.concatenate(picks))):
            q = vectors[items].mean(axis=0)
            out[kind].append(q / max(float(np.linalg.norm(q)), 1e-12))
    return {kind: np.asarray(qs, np.float32).reshape(count, vectors.shape[1])
            for kind, qs in out.items()}


def recall_of(rows: Any, keys: np.ndarray, valid: np.ndarray, queries: np.ndarray,
              exact: Sequence[np.ndarray], k: int = 10) -> tuple[float, int, float]:
    """(mean recall@k, queries that found none of their exact top k, mean coverage):
    each query's valid candidate rows re-scored against ``rows`` (float32 reads), their
    best k against the exact best k (the first k of ``exact``, each query's best rows in
    order); coverage, the share of all of ``exact`` among the candidates, however
    ranked (a list that also weighs popularity or co-visits reaches deeper than the
    best k by similarity)."""
    found, covered = [], []
    for q in range(len(queries)):
        cand = keys[q][valid[q]]
        best = cand[np.argsort(-(rows[cand] @ queries[q]), kind="stable")[:k]]
        want = set(np.asarray(exact[q][:k]).tolist())
        found.append(len(want & set(best.tolist())) / max(1, len(want)))
        deep = set(np.asarray(exact[q]).tolist())
        covered.append(len(deep & set(cand.tolist())) / max(1, len(deep)))
    if not found:
        return 0.0, 0, 0.0
    return float(np.mean(found)), sum(1 for f in found if f == 0), float(np.mean(covered))


def best_first(rows: Any, queries: np.ndarray, count: int) -> list[np.ndarray]:
    """Each query's ``count`` best rows by inner product, best first (exact)."""
    from stream_app.ann import exact_top

    out = []
    for q, found in zip(queries, exact_top(rows, None, queries, count)):
        out.append(found[np.argsort(-(rows[found] @ q), kind="stable")])
    return out


def measure_graph(s: Settings, n: int, dim: int, queries: int, widths: Sequence[int],
                  progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """One graph over a synthetic catalog of ``n`` items of ``dim`` components, searched
    at each width; ``progress`` hears of each stage (a build at 10^6 takes minutes)."""
    from stream_app.ann import AnnGraph, unreachable
    from stream_app.bench_scale import synthetic_catalog
    from stream_app.index import CatalogIndex

    params = s.ann_params()
    t0 = time.perf_counter()
    vectors, topic = synthetic_catalog(n, dim)
    index = CatalogIndex(vectors.shape[1])
    ids = [f"v{i}" for i in range(n)]
    index.upsert(zip(ids, vectors))
    index.compact(params.rows)
    rows = index.rows(n)
    asked = graph_queries(topic, vectors, queries)
    del vectors
    exact = {kind: best_first(rows, qs, COVERAGE) for kind, qs in asked.items()}
    progress(f"{n} items stored as {params.rows}, exact answers ready; building the "
             f"{params.dtype} graph (M {params.connectivity})")
    figures: dict[str, Any] = {"items": n, "dim": rows.shape[1], "rows": params.rows,
                               "dtype": params.dtype, "connectivity": params.connectivity,
                               "expansion_add": params.expansion_add,
                               "candidates": params.candidates,
                               "setup_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    graph = AnnGraph.build(ids, rows, params)
    figures["build_s"] = round(time.perf_counter() - t0, 1)
    figures["graph_bytes"] = graph.memory_bytes
    progress(f"built in {figures['build_s']} s; searching")
    figures["lost_items"] = unreachable(graph, rows, SELF_SAMPLE)
    searched: dict[str, Any] = {}
    for width in widths:
        graph.graph.expansion_search = max(int(width), params.candidates)
        for kind, qs in asked.items():
            t0 = time.perf_counter()
            keys, valid = graph.search_keys(qs, params.candidates, 1)
            seconds = time.perf_counter() - t0
            recall, none, coverage = recall_of(rows, keys, valid, qs, exact[kind])
            searched[f"ef {width}, {kind}"] = {
                "queries_per_s": round(len(qs) / max(seconds, 1e-9)),
                "recall_at_10": round(recall, 4), "found_none": none,
                f"coverage_of_{COVERAGE}": round(coverage, 4)}
    figures["searches"] = searched
    return figures


def run_graph_bench(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app.bench_scale import model_dim

    sizes = [int(float(n)) for n in str(args.graph).split(",") if n.strip()]
    ef = settings.ann_params().expansion_search
    widths = [int(w) for w in str(args.widths).split(",") if w.strip()] if args.widths \
        else [ef, 2 * ef, 4 * ef]
    results = {}
    for n in sizes:
        results[n] = measure_graph(settings, n, model_dim(settings), args.queries, widths,
                                   lambda line: print(line, flush=True))
    print("\nstream-app bench --graph (the ANN graph alone, one thread searching)")
    for n, f in results.items():
        print(f"  {n} items: rows {f['rows']}, graph {f['dtype']}, M {f['connectivity']}, "
              f"ef_add {f['expansion_add']}, {f['candidates']} candidates; built in "
              f"{f['build_s']} s, {f['graph_bytes'] / 2**20:.0f} MB; items not found by "
              f"their own vector {f['lost_items']:.2%}")
        for name, r in f["searches"].items():
            print(f"    {name:32s} {r['queries_per_s']:>7} queries/s  recall@10 "
                  f"{r['recall_at_10']:.4f}  found none {r['found_none']:>3}  best "
                  f"{COVERAGE} among candidates {r[f'coverage_of_{COVERAGE}']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({str(n): f for n, f in results.items()}, fh, indent=2)
    return 0
