"""MovieLens in its three common layouts, as catalog items and time-ordered rating events."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from stream_app.catalog_files import movielens_item


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[dict[str, Any]]  # item events
    events: list[dict[str, Any]]  # `rate` activity events, in event-time order


def load_movielens(path: str | Path, limit_users: int | None = None) -> Dataset:
    """`ml-latest-small` (ratings.csv, movies.csv), `ml-100k` (u.data, u.item) or
    `ml-1m` (ratings.dat, movies.dat). ``limit_users`` keeps the first N user ids."""
    root = Path(path)
    if (root / "ratings.csv").exists():
        items = _read_csv_items(root / "movies.csv")
        ratings = _read_csv_ratings(root / "ratings.csv")
    elif (root / "u.data").exists():
        items = list(_read_100k_items(root / "u.item"))
        ratings = list(_read_delimited(root / "u.data", "\t"))
    elif (root / "ratings.dat").exists():
        items = list(_read_1m_items(root / "movies.dat"))
        ratings = list(_read_delimited(root / "ratings.dat", "::"))
    else:
        raise FileNotFoundError(f"{root}: no MovieLens ratings.csv, u.data or ratings.dat")
    if limit_users is not None:
        keep = sorted({u for u, *_ in ratings}, key=int)[:limit_users]
        wanted = set(keep)
        ratings = [r for r in ratings if r[0] in wanted]
    order = sorted(range(len(ratings)), key=lambda n: (ratings[n][3], n))
    events = [{"event_id": f"ml-{u}-{i}", "user_id": u, "type": "rate", "item_id": i,
               "rating": rating, "ts": ts}
              for u, i, rating, ts in (ratings[n] for n in order)]
    return Dataset(root.name, items, events)


def repeated(data: Dataset, times: int) -> Dataset:
    """The log ``times`` times over, each copy's users new ones (``<user>~<copy>``): a
    longer log of the same shape (for soak runs: memory and latency over a long stream);
    the catalog is the same.

    The last copy is the log as it is; each earlier one is shifted back in event time by
    the log's span (one copy after another), or by less where that would reach before
    1970, and then copies overlap in time, their events interleaved. A copy shifted
    forward would lie in the future, and workers dead-letter such events (``future_ts``)."""
    if times <= 1 or not data.events:
        return data
    first = min(e["ts"] for e in data.events)
    span = max(e["ts"] for e in data.events) - first + 86400.0
    step = min(span, max(first, 0.0) / (times - 1))
    events = [{**e, "event_id": f"{e['event_id']}~{k}", "user_id": f"{e['user_id']}~{k}",
               "ts": max(0.0, e["ts"] - (times - 1 - k) * step)}  # rounding: never < 0
              for k in range(times) for e in data.events]
    events.sort(key=lambda e: e["ts"])  # stable: at equal times the earlier copy first
    return Dataset(f"{data.name}-x{times}", data.items, events)


def _read_csv_items(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [movielens_item(row) for row in csv.DictReader(fh)]


def _read_csv_ratings(path: Path) -> list[tuple[str, str, float, float]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [(r["userId"], r["movieId"], float(r["rating"]), float(r["timestamp"]))
                for r in csv.DictReader(fh)]


def _read_delimited(path: Path, sep: str) -> Iterator[tuple[str, str, float, float]]:
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.strip():
                u, i, rating, ts = line.rstrip("\n").split(sep)[:4]
                yield u, i, float(rating), float(ts)


_100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _read_100k_items(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5:
                continue
            flags = parts[-19:]
            genres = [g for g, f in zip(_100K_GENRES, flags) if f == "1" and g != "unknown"]
            yield movielens_item({"movieId": parts[0], "title": parts[1],
                                  "genres": "|".join(genres)})


def _read_1m_items(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.strip():
                movie_id, title, genres = line.rstrip("\n").split("::")
                yield movielens_item({"movieId": movie_id, "title": title, "genres": genres})
