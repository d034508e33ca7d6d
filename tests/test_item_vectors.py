"""Items that carry their own vector: the contract, the worker using it instead of the
encoder (and dead-lettering a wrong one), and `catalog load --vectors` from .npy."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from stream_app.catalog import Catalog
from stream_app.catalog_files import VectorFileError, read_vectors, with_vectors
from stream_app.config import Settings
from stream_app.contract import ContractError, Record, dumps, parse_item
from stream_app.metrics import Metrics
from stream_app.pipeline import Processor
from stream_app.store import Store, connect
from tests.fakes import FakeEncoder

LIMITS = Settings().limits()


def rec(obj: dict, offset: int = 0) -> Record:
    return Record("items", 0, offset, 1.0, str(obj.get("item_id")).encode(), dumps(obj))


def test_the_contract_takes_a_vector_of_the_models_dimension():
    item = parse_item(rec({"item_id": "a", "vector": [1, 0.5, -2, 0]}), LIMITS, 4)
    assert item.vector == (1.0, 0.5, -2.0, 0.0) and not item.title  # no text needed
    assert parse_item(rec({"item_id": "a", "title": "t"}), LIMITS, 4).vector is None
    with pytest.raises(ContractError, match="dimension is 4") as exc:
        parse_item(rec({"item_id": "a", "vector": [1.0, 2.0]}), LIMITS, 4)
    assert exc.value.reason == "invalid_field"
    for bad, reason in [([1, "x", 0, 0], "invalid_field"), ([True, 0, 0, 0], "invalid_field"),
                        ("1,2,3,4", "invalid_field"), ([], "invalid_field"),
                        ([0, 0, 0, 0], "out_of_range"), ("inf", "out_of_range")]:
        raw = (b'{"item_id": "a", "vector": [1e400, 0, 0, 0]}' if bad == "inf"
               else dumps({"item_id": "a", "vector": bad}))
        with pytest.raises(ContractError) as exc:
            parse_item(Record("items", 0, 0, 1.0, None, raw), LIMITS, 4)
        assert exc.value.reason == reason, bad
    # a deleted item's vector is ignored
    assert parse_item(rec({"item_id": "a", "deleted": True, "vector": [1]}), LIMITS, 4).deleted


def test_npy_vectors_follow_the_catalog_files_order(tmp_path):
    items = [{"item_id": "a", "title": "A"}, {"item_id": 7, "title": "B"}]
    np.save(tmp_path / "v.npy", np.array([[1, 0, 0], [0, 2, 0]], np.float32))
    vectors = read_vectors(tmp_path / "v.npy", items)
    assert sorted(vectors) == ["7", "a"]
    np.testing.assert_array_equal(vectors["7"], [0, 2, 0])
    sent = list(with_vectors(items, vectors))
    assert sent[0] == {"item_id": "a", "title": "A", "vector": [1.0, 0.0, 0.0]}
    assert json.loads(dumps(sent[1]))["vector"] == [0.0, 2.0, 0.0]
    np.save(tmp_path / "short.npy", np.zeros((1, 3), np.float32))
    with pytest.raises(VectorFileError, match="2 items"):
        read_vectors(tmp_path / "short.npy", items)
    with pytest.raises(VectorFileError, match=".npy or .parquet"):
        read_vectors(tmp_path / "v.csv", items)


def test_parquet_needs_pyarrow_or_reads_item_id_and_vector(tmp_path):
    items = [{"item_id": "a"}, {"item_id": "b"}]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        with pytest.raises(VectorFileError, match="pyarrow"):
            read_vectors(tmp_path / "v.parquet", items)
        return
    pq.write_table(pa.table({"item_id": ["b"], "vector": [[0.0, 1.0]]}), tmp_path / "v.parquet")
    assert list(read_vectors(tmp_path / "v.parquet", items)) == ["b"]


def test_catalog_load_cli_sends_the_vectors(tmp_path, monkeypatch):
    """`stream-app catalog load FILE --vectors V.npy` hands each item its row."""
    from stream_app import cli

    (tmp_path / "cat.jsonl").write_text('{"item_id": "a"}\n{"item_id": "b", "title": "B"}\n')
    np.save(tmp_path / "v.npy", np.eye(2, 3, dtype=np.float32))
    sent = []

    async def fake_load(s, bootstrap, items, wait=True, timeout=600.0, progress=True):
        sent.extend(items)
        return len(sent)

    monkeypatch.setattr("stream_app.loading.load_catalog", fake_load)
    assert cli.main(["catalog", "load", str(tmp_path / "cat.jsonl"), "--vectors",
                     str(tmp_path / "v.npy")]) == 0
    assert [i["vector"] for i in sent] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert cli.main(["catalog", "load", str(tmp_path / "cat.jsonl"), "--vectors",
                     str(tmp_path / "nope.txt")]) == 2


@pytest.mark.integration
def test_the_worker_uses_an_items_vector_and_dead_letters_a_wrong_one(redis_url, prefix):
    settings = Settings.from_env({}).replace(key_prefix=prefix, redis_url=redis_url)

    async def go():
        store = Store(connect(redis_url), prefix)
        enc = FakeEncoder()
        catalog = Catalog(store, enc.version, enc.dim, 86400.0)
        proc = Processor(settings, store, enc, catalog, Metrics())
        mine = [3.0] + [0.0] * 7
        out = await proc.process_items([
            rec({"item_id": "own", "vector": mine}, 0),
            rec({"item_id": "text", "title": "encoded"}, 1),
            rec({"item_id": "bad", "title": "x", "vector": [1.0, 2.0]}, 2)])
        calls = enc.calls
        stored = await store.item_vectors(enc.version, ["own", "text", "bad"])
        await store.r.aclose()
        return out, calls, catalog, stored

    out, calls, catalog, stored = asyncio.run(go())
    assert calls == 1  # only the item without a vector went through the model
    np.testing.assert_allclose(catalog.index.vector("own"), [1.0] + [0.0] * 7)  # unit length
    np.testing.assert_allclose(stored["own"], [1.0] + [0.0] * 7)
    assert "text" in catalog.index and "bad" not in catalog.index and "bad" not in stored
    assert [r.reason for r in out.rejected] == ["invalid_field"]
    assert "dimension is 8" in out.rejected[0].error
    assert catalog.titles.get("own", "own") == "own"  # no title: shown by its id
