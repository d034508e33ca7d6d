"""Reading catalogs from JSON lines or CSV (our columns, or MovieLens movies.csv)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

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
