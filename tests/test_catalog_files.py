"""Catalog files (JSONL, our CSV, MovieLens CSV) and the bundled sample data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_app.catalog_files import movielens_item, read_catalog, read_jsonl
from stream_app.config import Settings
from stream_app.contract import Record, dumps, parse_activity, parse_item

DATA = Path(__file__).parent.parent / "stream_app" / "data"


def as_record(obj: dict, offset: int, topic: str) -> Record:
    return Record(topic=topic, partition=0, offset=offset, timestamp=1.0, key=None,
                  value=dumps(obj))


def test_read_jsonl_catalog_skips_blank_lines(tmp_path):
    p = tmp_path / "cat.jsonl"
    p.write_text('{"item_id": "a", "title": "A", "tags": ["x"]}\n\n'
                 '{"item_id": "b", "text": "Bé"}\n   \n', encoding="utf-8")
    assert read_catalog(p) == [{"item_id": "a", "title": "A", "tags": ["x"]},
                               {"item_id": "b", "text": "Bé"}]
    assert list(read_jsonl(str(p))) == read_catalog(str(p))


def test_read_csv_with_our_columns(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text('item_id,title,text,tags\n'
                 'a1,Star Road,"A ship, lost.",sci-fi|space\n'
                 'a2,Quiet,,\n'
                 'a3,Only,Body,drama||\n', encoding="utf-8")
    assert read_catalog(p) == [
        {"item_id": "a1", "title": "Star Road", "text": "A ship, lost.",
         "tags": ["sci-fi", "space"]},
        {"item_id": "a2", "title": "Quiet", "text": "", "tags": []},
        {"item_id": "a3", "title": "Only", "text": "Body", "tags": ["drama"]},
    ]


def test_read_csv_upper_case_suffix_and_missing_columns(tmp_path):
    p = tmp_path / "CAT.CSV"
    p.write_text("item_id,title\nz,Zed\n", encoding="utf-8")
    assert read_catalog(p) == [{"item_id": "z", "title": "Zed", "text": "", "tags": []}]


def test_read_movielens_movies_csv(tmp_path):
    p = tmp_path / "movies.csv"
    p.write_text('movieId,title,genres\n'
                 '1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n'
                 '2,"American President, The (1995)",Comedy|Drama|Romance\n'
                 '3,Untitled,(no genres listed)\n'
                 '4,Heat (1995) ,Action\n', encoding="utf-8")
    items = read_catalog(p)
    assert items == [
        {"item_id": "1", "title": "Toy Story (1995)",
         "text": "A adventure, animation, children, comedy, fantasy movie from 1995.",
         "tags": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]},
        {"item_id": "2", "title": "American President, The (1995)",
         "text": "A comedy, drama, romance movie from 1995.",
         "tags": ["Comedy", "Drama", "Romance"]},
        {"item_id": "3", "title": "Untitled", "text": "A movie.", "tags": []},
        {"item_id": "4", "title": "Heat (1995)", "text": "A action movie from 1995.",
         "tags": ["Action"]},
    ]
    for n, obj in enumerate(items):
        assert parse_item(as_record(obj, n, "items"), Settings().limits()).item_id == obj["item_id"]


def test_movielens_item_without_year():
    assert movielens_item({"movieId": "9", "title": " Solo ", "genres": "Drama"}) == {
        "item_id": "9", "title": "Solo", "text": "A drama movie.", "tags": ["Drama"]}


# --- bundled data --------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalog() -> list[dict]:
    return read_catalog(DATA / "sample_catalog.jsonl")


@pytest.fixture(scope="module")
def script() -> list[dict]:
    return list(read_jsonl(DATA / "demo_script.jsonl"))


def test_sample_catalog_size_ids_and_genres(catalog):
    assert len(catalog) >= 100
    ids = [c["item_id"] for c in catalog]
    assert len(set(ids)) == len(ids)
    genres = {c["tags"][0] for c in catalog}
    assert len(genres) >= 5, genres
    assert "sci-fi" in genres


def test_sample_catalog_every_line_parses(catalog):
    lines = [l for l in (DATA / "sample_catalog.jsonl").read_text("utf-8").splitlines()
             if l.strip()]
    assert len(lines) == len(catalog)
    for n, line in enumerate(lines):
        rec = Record("items", 0, n, 1.0, None, line.encode("utf-8"))
        item = parse_item(rec, Settings().limits())
        assert not item.deleted and item.tags and item.title and item.embed_text()
        assert item.item_id == json.loads(line)["item_id"]


def test_demo_script_parses_and_references_existing_items(catalog, script):
    known = {c["item_id"] for c in catalog}
    lines = [l for l in (DATA / "demo_script.jsonl").read_text("utf-8").splitlines()
             if l.strip()]
    assert len(lines) == len(script) > 0
    events = [parse_activity(Record("user-activity", 0, n, json.loads(line).get("ts", 1.0),
                                    None, line.encode("utf-8")), Settings().limits())
              for n, line in enumerate(lines)]
    for e in events:
        if e.item_id is not None:
            assert e.item_id in known, e.item_id
        else:
            assert e.text
    assert len({e.event_id for e in events}) == len(events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    texts = [e for e in events if e.type == "text"]
    assert any(e.text == "I like watching movies, especially science fiction" for e in texts)
