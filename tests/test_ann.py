"""Large catalogs: nearest-neighbour candidates, exact re-scoring, the graph kept in step
with the catalog's changes and with the model version (thresholds lowered by settings)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from stream_app.ann import AnnCandidates, exact_top, unreachable
from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.index import CatalogIndex
from stream_app.metrics import Metrics
from stream_app.model.adapter import Adapter, Blend
from stream_app.model.interest import Interest, UserState
from stream_app.model.sequence import Window, fit_sequence
from stream_app.pipeline import Processor
from tests.fakes import FakeEncoder
from tests.harness import run_python

DIM = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``n // 25`` topic centres (real embeddings cluster too)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 25), dim))
    x = centres[rng.integers(len(centres), size=n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(x: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Interest-like queries: catalog items moved a little."""
    rng = np.random.default_rng(seed)
    q = x[rng.integers(len(x), size=n)] + 0.1 * rng.normal(size=(n, x.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def settings(**over) -> Settings:
    # a catalog ranked through candidates borrows no co-visit scores from text neighbours
    # (``covisit_text_max_items``): neither does the brute-force one it is held against
    return Settings(**{"ann_min_items": 500, "ann_candidates": 60, "ann_popular_pool": 200,
                       "ann_threads": 1, "covisit_text_weight": 0.0, **over})


def catalog_of(vectors: np.ndarray, s: Settings, ann: bool = True) -> Catalog:
    catalog = Catalog.for_settings(None, "enc", vectors.shape[1], s)
    if not ann:
        catalog.ann = None
    catalog.upsert((f"i{n}", v) for n, v in enumerate(vectors))
    return catalog


def recall(found: list, truth: list, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / max(1, min(k, len(t)))
                          for f, t in zip(found, truth)]))


@pytest.mark.parametrize("dtype", ["b1", "i8", "f16"])
def test_candidates_hold_the_exact_top_10(dtype):
    dim = 128 if dtype == "b1" else DIM  # sign bits need the width a text model has
    x = clustered(3000, dim)
    index = CatalogIndex(dim)
    index.upsert((f"i{n}", v) for n, v in enumerate(x))
    ann = AnnCandidates(index, replace(settings(ann_dtype=dtype).ann_params(), dtype=dtype))
    ann.build_now()
    assert ann.graph is not None and len(ann.graph) == 3000
    queries = near(x, 200)
    truth = [set(np.argsort(-(x @ q))[:10]) for q in queries]
    found = ann.search(queries, 60)  # unordered: re-scored exactly afterwards
    assert np.mean([len(t & set(f)) / 10 for f, t in zip(found, truth)]) >= 0.98


def test_exact_top_is_the_brute_force_top():
    x = clustered(1000)
    q = clustered(5, seed=3)
    for rows, got in zip(q, exact_top(x.astype(np.float16), None, q, 7)):
        assert set(got) == set(np.argsort(-(x @ rows))[:7])


def test_upserts_and_deletes_are_searched_at_once_and_folded_into_the_next_graph():
    x = clustered(2000)
    index = CatalogIndex(DIM)
    index.upsert((f"i{n}", v) for n, v in enumerate(x))
    params = replace(settings().ann_params(), rebuild_fraction=0.01)
    ann = AnnCandidates(index, params)
    ann.build_now()
    target = x[7]
    index.upsert([("new", target)])  # a new item exactly where the query points
    index.remove(["i7"])  # the old one there leaves; the last row moves into its hole
    (rows,) = ann.search(target[None, :], 20)
    ids = {index.ids[r] for r in rows}
    assert "new" in ids and "i7" not in ids
    assert all(r < len(index) for r in rows)
    assert ann.changed.count == 2  # the hole (now holding "new") and the emptied last row
    index.upsert((f"more{n}", v) for n, v in enumerate(clustered(30, seed=5)))
    assert ann.needs_build()
    ann.maintain()  # starts the rebuild in a thread ...
    index.upsert([("during", x[9])])  # ... while the stream goes on
    assert ann.wait(60)
    assert ann.graph is not None and len(ann.graph) == 2030
    assert ann.changed.count == 1  # only what changed after the new snapshot
    (rows,) = ann.search(x[9][None, :], 10)
    assert "during" in {index.ids[r] for r in rows}
    ann.close()


def _states(x: np.ndarray, n: int, seed: int = 2) -> list[UserState]:
    rng = np.random.default_rng(seed)
    states = []
    for u in range(n):
        picks = rng.integers(len(x), size=3)
        interests = tuple(Interest(x[p] * (1 + u % 3), 1.0 + j, 0.5 * j, 1000.0, f"i{p}", 1.0)
                          for j, p in enumerate(picks[: 1 + u % 3]))
        states.append(UserState(interests=interests, last_ts=1000.0, n_events=3,
                                recent_items=tuple((f"i{p}", 1000.0) for p in picks)))
    return states


def _ranked(catalog: Catalog, s: Settings, states: list[UserState], seen: list) -> list:
    proc = Processor(s, None, FakeEncoder(), catalog, Metrics())
    return proc._ranked(states, seen, [1000.0] * len(states), 1000.0, 10)


def _shared_counts(catalogs: list[Catalog], x: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    popular = [(f"i{i}", float(w), 1000.0) for i, w in
               zip(rng.integers(len(x), size=300), rng.pareto(1.5, size=300) * 5)]
    choices = [((f"i{a}", f"i{b}"), f"i{c}") for a, b, c in rng.integers(len(x), size=(400, 3))]
    for catalog in catalogs:
        catalog.popularity.add(popular)
        catalog.covisits.add(choices)


ATOL = {"f16": 2e-3, "i8": 1e-2}  # scores of compact rows against float32 ones


@pytest.mark.parametrize("rows", ["f16", "i8"])
def test_large_catalog_lists_match_exact_ranking(rows):
    """Candidates from the graphs, then the same scoring: the lists of a brute-force
    ranking of every item (popularity, co-visits, exclusions, interest shares)."""
    x = clustered(2500)
    s = settings(ann_rows=rows)
    large, exact = catalog_of(x, s), catalog_of(x, s, ann=False)
    _shared_counts([large, exact], x)
    states = _states(x, 40)
    seen = [frozenset(f"i{i}" for i in range(u, 2500, 97)) for u in range(40)]
    _ranked(large, s, states[:1], seen[:1])  # the first ranking makes it large ...
    assert large.large and large.index.compacted and not exact.large
    large.text_ann.wait(60)  # ... and starts the graph's build in a thread
    assert large.text_ann.graph is not None
    got, want = _ranked(large, s, states, seen), _ranked(exact, s, states, seen)
    assert recall([[i for i, _, _ in r] for r in got], [[i for i, _, _ in r] for r in want]) \
        >= 0.98
    same = [(g, w) for g, w in zip(got, want) if [i for i, _, _ in g] == [i for i, _, _ in w]]
    assert len(same) >= 0.9 * len(got)
    for g, w in same:  # the same score and reason (compact vectors: within ATOL)
        assert [r for _, _, r in g] == [r for _, _, r in w]
        np.testing.assert_allclose([v for _, v, _ in g], [v for _, v, _ in w],
                                   atol=ATOL[rows])
    assert not any(i in ex for r, ex in zip(got, seen) for i, _, _ in r)


@pytest.mark.parametrize("rows", ["f16", "i8"])
def test_rescoring_every_item_as_candidate_is_exact_scoring(rows):
    """With every item a candidate the restricted path is the full one, to the compact
    rows' precision."""
    x = clustered(700)
    s = settings(ann_candidates=700, ann_popular_pool=700, ann_rows=rows)
    large, exact = catalog_of(x, s), catalog_of(x, s, ann=False)
    _shared_counts([large, exact], x)
    states, seen = _states(x, 12), [frozenset({"i1", "i2"})] * 12
    _ranked(large, s, states[:1], seen[:1])
    large.text_ann.wait(60)
    got, want = _ranked(large, s, states, seen), _ranked(exact, s, states, seen)
    assert large.index.rows(1).codes.dtype == {"f16": np.float16, "i8": np.int8}[rows]
    if rows == "f16":
        for g, w in zip(got, want):
            assert [i for i, _, _ in g] == [i for i, _, _ in w]
    else:  # int8 may swap two items whose scores differ by less than its error
        assert recall([[i for i, _, _ in r] for r in got],
                      [[i for i, _, _ in r] for r in want]) >= 0.98
    for g, w in zip(got, want):
        scores = dict((i, v) for i, v, _ in w)
        common = [(v, scores[i]) for i, v, _ in g if i in scores]
        np.testing.assert_allclose(*zip(*common), atol=ATOL[rows])


def _trained(ids: list[str], x: np.ndarray, version: str = "enc+ft00001") -> Adapter:
    params = replace(Settings().sequence_params(), length=4, dim=8, blocks=1, heads=2,
                     dropout=0.0, lr=1e-2, epochs=2.0, batch_size=8)
    windows = [Window(tuple(range(s, s + 4))) for s in range(0, 40)]
    weights, _ = fit_sequence(None, windows, ids[:50], x[:50], params)
    return Adapter(version, "enc", weights, Blend(1.0, 1.0, None, None))


@pytest.mark.parametrize("rows", ["f16", "i8"])
def test_a_model_version_gets_its_own_graph_before_it_ranks(rows):
    x = clustered(1500)
    s = settings(ann_rows=rows)
    large, exact = catalog_of(x, s), catalog_of(x, s, ann=False)
    _shared_counts([large, exact], x)
    states = _states(x, 20)
    seen = [frozenset()] * 20
    _ranked(large, s, states[:1], seen[:1])
    large.text_ann.wait(60)
    adapter = _trained(list(large.index.ids), x)
    asyncio.run(large.use(adapter))
    asyncio.run(exact.use(adapter))
    ann = large.ranking_ann
    assert ann is not None and ann.graph is not None and len(ann.graph) == 1500
    assert large.ranking.dim == 8 and large.ranking.compacted
    assert ann.params.dtype != "b1"  # inner products: never sign bits
    got, want = _ranked(large, s, states, seen), _ranked(exact, s, states, seen)
    assert recall([[i for i, _, _ in r] for r in got], [[i for i, _, _ in r] for r in want]) \
        >= 0.98
    # the version's graph follows the catalog's changes like the text one
    large.upsert([("fresh", x[3])])
    assert ann.changed.count >= 1 and "fresh" in large.ranking
    asyncio.run(large.use(Adapter.base("enc")))  # back to the plain encoder: no graph
    assert large.ranking is large.index and large.ranking_ann is None


def test_int8_rows_follow_upserts_removals_and_growth():
    """An int8 index (a scale per row) keeps codes and scales aligned through every change
    a float32 one goes through, within int8's error."""
    from stream_app.index import quantize

    x = clustered(300, 384) * 3  # any length: the scale is per row
    codes, scales = quantize(x)
    back = codes.astype(np.float32) * scales[:, None]
    assert np.abs(back - x).max() <= scales.max() / 2 + 1e-6
    assert (np.sum(back * x, 1) / np.linalg.norm(back, axis=1) / np.linalg.norm(x, axis=1)
            ).min() >= 0.9999
    assert quantize(np.zeros((2, 4)))[1].tolist() == [1.0, 1.0]
    small, exact = CatalogIndex(384), CatalogIndex(384)
    small.upsert((f"i{n}", v) for n, v in enumerate(x[:10]))
    small.compact("i8")  # existing rows quantized, later ones on writing
    exact.upsert((f"i{n}", v) for n, v in enumerate(x[:10]))
    for index in (small, exact):
        index.upsert((f"i{n}", v) for n, v in enumerate(x[10:200], 10))  # grows
        index.remove(["i3", "i150", "i199"])  # last rows moved into the holes
        index.upsert([("i5", x[250]), ("late", x[251])])
    assert small.compacted and list(small.ids) == list(exact.ids)
    np.testing.assert_allclose(small.matrix, exact.matrix, atol=scales.max() / 2 + 1e-6)
    np.testing.assert_allclose(small.rows_f32([0, 5, 7]), exact.rows_f32([0, 5, 7]),
                               atol=scales.max() / 2 + 1e-6)
    np.testing.assert_allclose(small.vector("late"), x[251], atol=scales.max() / 2 + 1e-6)
    copy = small.copy()
    small.upsert([("i0", -x[0])])
    np.testing.assert_allclose(copy.vector("i0"), x[0], atol=scales.max() / 2 + 1e-6)
    q = clustered(3, 384, seed=9)
    exact.upsert([("i0", -x[0])])
    # the same top 5 (two items of a cluster may swap places: their scores tie to int8)
    assert [{i for i, _ in r} for r in small.rank(q, 5, [[]] * 3)] == \
        [{i for i, _ in r} for r in exact.rank(q, 5, [[]] * 3)]
    with pytest.raises(ValueError, match="f16 or i8"):
        CatalogIndex(4).compact("i4")


def test_below_the_threshold_nothing_changes():
    x = clustered(300)
    s = settings()
    catalog = catalog_of(x, s)
    _ranked(catalog, s, _states(x, 3), [frozenset()] * 3)
    assert not catalog.large and not catalog.index.compacted and catalog.text_ann is None


def test_the_trainers_catalog_never_goes_large():
    """Only a catalog that ranks (a worker's) compacts and builds graphs."""
    catalog = catalog_of(clustered(800), settings())
    assert not catalog.serving and not catalog.large
    assert catalog.index.matrix.dtype == np.float32


def test_onnx_runtime_loads_after_a_graph_was_built():
    """usearch's extension exports its C++ runtime's locale ids process-wide; ONNX Runtime
    imported after it crashed the process (SIGSEGV). ``usearch_index`` loads it first, so a
    worker with the onnx encoder backend may build a graph before its first text."""
    pytest.importorskip("onnxruntime")
    code = ("import numpy as np\n"
            "from stream_app.ann import usearch_index\n"
            "index = usearch_index()(ndim=8, metric='ip', dtype='i8')\n"
            "index.add(np.arange(4, dtype=np.uint64), np.eye(4, 8, dtype=np.float32))\n"
            "import onnxruntime\n"
            "print(onnxruntime.get_device())\n")
    done = run_python(code)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "CPU"


def test_freed_memory_is_handed_back_when_a_graph_is_installed(monkeypatch):
    import stream_app.ann as ann_mod

    calls = []
    monkeypatch.setattr(ann_mod, "release_freed_memory", lambda: calls.append(1))
    index = CatalogIndex(DIM)
    index.upsert((f"i{n}", v) for n, v in enumerate(clustered(300)))
    ann = AnnCandidates(index, settings().ann_params())
    ann.build_now()
    assert ann.graph is not None and calls == [1]
    ann.close()
    monkeypatch.undo()
    ann_mod.release_freed_memory()  # glibc here: malloc_trim; elsewhere nothing


def test_float16_rows_convert_bit_for_bit():
    """The fast float16 -> float32 conversion the re-scoring reads rows with is numpy's,
    for normal, subnormal, zero and signed values."""
    from stream_app.index import f16_to_f32

    rng = np.random.default_rng(5)
    half = np.concatenate([(rng.standard_normal(20000) * 0.05).astype(np.float16),
                           np.array([0.0, -0.0, 1e-7, -3e-5, 6.1e-5, 65504, -65504, 1.0],
                                    np.float16),
                           np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16)])
    got, want = f16_to_f32(half.reshape(-1, 1)), half.reshape(-1, 1).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    index = CatalogIndex(DIM)
    index.upsert((f"i{n}", v) for n, v in enumerate(clustered(100)))
    index.compact("f16")
    np.testing.assert_array_equal(index.rows_f32([3, 1, 99]),
                                  index.rows(100).codes[[3, 1, 99]].astype(np.float32))


class _Graph:
    """A graph stand-in that never returns the rows in ``lost``."""

    def __init__(self, rows: np.ndarray, lost: set[int]) -> None:
        self.rows, self.lost = rows, lost

    def __len__(self) -> int:
        return len(self.rows)

    def search_keys(self, queries, count, threads):
        scores = queries @ self.rows.T
        scores[:, sorted(self.lost)] = -np.inf
        keys = np.argsort(-scores, axis=1)[:, :count]
        return keys, np.isfinite(np.take_along_axis(scores, keys, 1))


def test_unreachable_items_are_those_a_search_for_their_own_vector_misses():
    rows = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # unit, as a catalog's rows
    assert unreachable(_Graph(rows, set()), rows, 200) == 0.0
    assert unreachable(_Graph(rows, set(range(0, 200, 10))), rows, 200) == pytest.approx(0.1)
    # a sample: about the same share
    assert 0.0 < unreachable(_Graph(rows, set(range(0, 200, 10))), rows, 100) < 0.25


def test_each_graph_reports_the_sampled_items_it_cannot_find_unless_rewritten_meanwhile(
        monkeypatch):
    x = clustered(1000)
    index = CatalogIndex(DIM)
    index.upsert((f"i{n}", v) for n, v in enumerate(x))
    ann = AnnCandidates(index, settings().ann_params())
    ann.build_now()
    assert ann.unreachable == 0.0 and ann.describe()["unreachable"] == 0.0  # a sound graph
    # a stand-in check: rows 1 and 2 not found; row 1 is rewritten while the graph builds
    monkeypatch.setattr("stream_app.ann.self_found", lambda graph, rows, sample: (
        np.array([0, 1, 2, 3]), np.array([True, False, False, True])))
    ann.start_build()
    index.upsert([("i1", x[500])])
    ann.wait()
    assert ann.unreachable == pytest.approx(1 / 3, abs=1e-4)  # row 2 of rows 0, 2, 3

    def broken(graph, rows, sample):
        raise RuntimeError("a diagnostic that fails")

    monkeypatch.setattr("stream_app.ann.self_found", broken)
    builds = ann.builds
    ann.build_now()
    assert ann.builds == builds + 1 and ann.unreachable is None  # the graph serves
    # a version's item vectors are not unit length: their graph is not checked
    unchecked = AnnCandidates(index, settings().ann_params(), self_check=False)
    unchecked.build_now()
    assert unchecked.graph is not None and unchecked.describe()["unreachable"] is None
