"""Reading catalogs from JSON lines or CSV (our columns, or MovieLens movies.csv), and
items' own vectors from a .npy or Parquet file."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_catalog(path: str | Path) -> list[dict[str, Any]]:
    """Item events from a file; CSV columns item_id,title,text,tags (tags `|`-separated),
    or MovieLens movieId,title,genres."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return list(read_jsonl(path))
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "movieId" in rows[0]:
        return [movielens_item(r) for r in rows]
    return [{"item_id": r["item_id"], "title": r.get("title", ""), "text": r.get("text", ""),
             "tags": [t for t in (r.get("tags") or "").split("|") if t]} for r in rows]


def movielens_item(row: dict[str, str]) -> dict[str, Any]:
    genres = [g for g in row.get("genres", "").split("|") if g and g != "(no genres listed)"]
    title = row["title"].strip()
    match = _YEAR.search(title)
    text = f"A {', '.join(genres).lower()} movie" if genres else "A movie"
    if match:
        text += f" from {match.group(1)}"
    return {"item_id": row["movieId"], "title": title, "text": text + ".", "tags": genres}


class VectorFileError(ValueError):
    """A vectors file that does not fit the catalog (shown as one line by the CLI)."""


def read_vectors(path: str | Path, items: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Item id -> vector from ``path``: a ``.npy`` matrix whose rows are the items in the
    order of ``items``, or a Parquet file with ``item_id`` and ``vector`` columns (read
    with pyarrow, when installed)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        matrix = np.load(path, mmap_mode="r")
        if matrix.ndim != 2 or len(matrix) != len(items):
            raise VectorFileError(
                f"{path}: {matrix.shape} vectors, the catalog has {len(items)} items (one "
                "row per item, in the catalog file's order)")
        return {str(item["item_id"]): np.asarray(row, np.float32)
                for item, row in zip(items, matrix)}
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise VectorFileError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or give "
                "the vectors as a .npy file (one row per item, in the catalog's order)"
            ) from None
        table = pq.read_table(path, columns=["item_id", "vector"])
        ids = [str(i) for i in table.column("item_id").to_pylist()]
        vectors = table.column("vector").to_pylist()
        return {i: np.asarray(v, np.float32) for i, v in zip(ids, vectors) if v is not None}
    raise VectorFileError(f"{path}: vectors must be a .npy or .parquet file")


def with_vectors(items: Iterable[dict[str, Any]], vectors: Mapping[str, np.ndarray],
                 decimals: int = 6) -> Iterator[dict[str, Any]]:
    """The items, each with a ``vector`` field where ``vectors`` has one (rounded to
    ``decimals``: a smaller record; a cosine moves by far less than float16 moves it),
    made one at a time (a million items' vectors as JSON lists would not fit in memory)."""
    for item in items:
        vec = vectors.get(str(item["item_id"]))
        if vec is None:
            yield item
        else:
            yield {**item, "vector": np.round(np.asarray(vec, np.float64), decimals).tolist()}
