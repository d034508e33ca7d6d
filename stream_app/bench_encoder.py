"""`stream-app bench --encoder`: texts/s of each encoder backend and how close its vectors are
to the torch encoder's, in one run.

Texts: the bundled sample catalog, MovieLens titles and item texts (``--catalog``, else
``../shared/data/ml-latest-small/movies.csv`` when there is one) and synthetic queries of 1
to 40 words, ``--text-events`` of them in all.

Batched: every text through ``encode`` (``encode_batch_size`` per forward pass), handed over
in slices of four batches. One by one: a text per ``encode`` call, as a lone free-text event
costs. Each slice, and each block of 25 single texts, goes through every backend in turn, the
order rotating, so the load of a machine shared with other work falls on all backends alike
(not text by text: one library's thread pool, still spinning, would slow the next). Three
rounds over all texts; figures are the medians of the rounds, ratios to torch are per round,
then their median.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stream_app.config import Settings
from stream_app.encoder import ENCODER_BACKENDS, build_encoder

ROUNDS = 3
ONE_BY_ONE = 300  # texts encoded one per call, per round
SLICE_BATCHES = 4  # batched: texts given to each backend in turn, in encode_batch_size units
SINGLES_BLOCK = 25  # one by one: texts given to each backend in turn

_GENRES = ("science fiction", "romance", "horror", "comedy", "documentary", "thriller",
           "animation", "western", "war", "musical", "crime", "fantasy", "drama", "mystery")
_THINGS = ("robots", "space pirates", "a haunted lighthouse", "time travel", "a heist",
           "dragons", "a small town detective", "jazz musicians", "zombies", "deep sea divers",
           "a cooking contest", "chess prodigies", "a road trip", "spies in Berlin",
           "a wedding gone wrong", "talking animals", "the French revolution", "hackers")
_MOODS = ("funny", "dark", "slow", "feel-good", "scary", "smart", "sad", "weird", "epic",
          "cozy", "violent", "romantic", "short", "old", "black and white", "award-winning")
_TEMPLATES = (
    "{genre}", "{thing}", "{mood} {genre}", "{mood} movies about {thing}",
    "I like watching {genre} movies, especially about {thing}",
    "something {mood} for tonight", "like {title} but more {mood}",
    "{title}", "movies similar to {title}", "{genre} with {thing} and {other}",
    "my kids want {mood} {genre} with {thing}; nothing too {mood2} please",
    "no more {genre}. show me {mood} stuff about {thing}, maybe {other}, from the {decade}s",
    "{thing} {thing2} {genre}", "best {genre} of the {decade}s",
    "I loved {title} and {title2}; what else is {mood} and about {thing}?",
)


def movies_csv() -> Path | None:
    for candidate in ("../shared/data/ml-latest-small/movies.csv",
                      Path(__file__).resolve().parents[2] / "shared" / "data" /
                      "ml-latest-small" / "movies.csv"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def bench_texts(n: int, seed: int = 7, catalog_file: str | None = None) -> dict[str, list[str]]:
    """About ``n`` varied texts by kind: the sample catalog's item texts, titles and item
    texts of ``catalog_file`` (else MovieLens movies.csv when found), synthetic queries."""
    from stream_app.catalog_files import read_catalog
    from stream_app.contract import ItemEvent
    from stream_app.demo import bundled

    def embed(item: dict[str, Any]) -> str:
        return ItemEvent(str(item["item_id"]), False, item.get("title", ""),
                         item.get("text", ""), tuple(item.get("tags", ()))).embed_text()

    rng = random.Random(seed)
    catalog = [embed(i) for i in read_catalog(bundled("sample_catalog.jsonl"))][:n // 5]
    titles: list[str] = []
    movies: list[str] = []
    path = Path(catalog_file) if catalog_file else movies_csv()
    if path is not None and path.is_dir():  # a MovieLens directory
        path = path / "movies.csv"
    if path is not None:
        rows = read_catalog(path)
        rng.shuffle(rows)
        share = (n - len(catalog)) * 3 // 10
        titles = [str(r.get("title", "")) for r in rows[:share] if r.get("title")]
        movies = [embed(r) for r in rows[share:2 * share]]
    names = titles or [t.split(".")[0] for t in catalog] or ["Alien"]
    queries = []
    while len(catalog) + len(titles) + len(movies) + len(queries) < n:
        template = rng.choice(_TEMPLATES)
        queries.append(template.format(
            genre=rng.choice(_GENRES), thing=rng.choice(_THINGS), other=rng.choice(_THINGS),
            thing2=rng.choice(_THINGS), mood=rng.choice(_MOODS), mood2=rng.choice(_MOODS),
            title=rng.choice(names), title2=rng.choice(names),
            decade=rng.choice(range(1930, 2030, 10))))
    return {"catalog": catalog, "titles": titles, "items": movies, "queries": queries}


def cosine_stats(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    cosine = np.sum(got * want, axis=1)
    return {"mean": float(cosine.mean()), "min": float(cosine.min()),
            "p01": float(np.percentile(cosine, 1)) if len(cosine) else float("nan")}


def _rotated(encoders: dict[str, Any], order: list[str], chunks: list[list[str]],
             run: Callable[[Any, list[str]], list[np.ndarray]]
             ) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Each chunk through every backend (``run(encoder, chunk)``), the backends' order
    rotating from chunk to chunk: seconds spent per backend, and each one's outputs."""
    spent = dict.fromkeys(order, 0.0)
    out: dict[str, list[np.ndarray]] = {b: [] for b in order}
    for n, chunk in enumerate(chunks):
        for backend in order[n % len(order):] + order[:n % len(order)]:
            began = time.perf_counter()
            out[backend].extend(run(encoders[backend], chunk))
            spent[backend] += time.perf_counter() - began
    return spent, out


def measure(backends: Sequence[str], texts: list[str], settings: Settings,
            rounds: int = ROUNDS, one_by_one: int = ONE_BY_ONE,
            log: Any = print) -> dict[str, Any]:
    encoders = {}
    figures: dict[str, Any] = {"texts": len(texts), "rounds": rounds, "backends": {}}
    for backend in backends:
        started = time.perf_counter()
        try:
            encoders[backend] = build_encoder(backend, settings.model_path,
                                              settings.max_seq_length,
                                              settings.encode_batch_size,
                                              settings.torch_threads)
        except ModuleNotFoundError as exc:
            log(f"  {backend}: skipped: {exc}")
            figures["backends"][backend] = {"skipped": str(exc)}
            continue
        load_s = time.perf_counter() - started
        encoders[backend].encode(texts[:8])  # warm up
        figures["backends"][backend] = {"version": encoders[backend].version,
                                        "load_s": round(load_s, 2)}
        log(f"  {backend}: loaded in {load_s:.1f}s, version {encoders[backend].version}")
    singles = texts[:: max(1, len(texts) // one_by_one)][:one_by_one]
    order = list(encoders)
    batched: dict[str, list[float]] = {b: [] for b in order}
    single: dict[str, list[float]] = {b: [] for b in order}
    vectors: dict[str, list[np.ndarray]] = {}
    single_vectors: dict[str, list[np.ndarray]] = {}
    # Interleaved (each slice of texts, each block of single texts, through every backend,
    # the order rotating) so that the load of a shared machine falls on all backends alike;
    # not text by text: the thread pools of one library, still spinning, would slow the next.
    step = SLICE_BATCHES * max(1, settings.encode_batch_size)
    slices = [texts[start:start + step] for start in range(0, len(texts), step)]
    blocks = [singles[start:start + SINGLES_BLOCK]
              for start in range(0, len(singles), SINGLES_BLOCK)]
    for r in range(rounds):
        spent, vectors = _rotated(encoders, order, slices, lambda enc, part: [enc.encode(part)])
        for backend in order:
            batched[backend].append(len(texts) / spent[backend])
        spent, single_vectors = _rotated(encoders, order, blocks,
                                         lambda enc, block: [enc.encode([t]) for t in block])
        for backend in order:
            single[backend].append(len(singles) / spent[backend])
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{b} {batched[b][-1]:.0f}/s batched, {single[b][-1]:.0f}/s one by one"
            for b in order))
    whole = {b: np.concatenate(v) if v else np.zeros((0, 1), np.float32)
             for b, v in vectors.items()}
    one = {b: np.concatenate(v) if v else np.zeros((0, 1), np.float32)
           for b, v in single_vectors.items()}
    for backend in order:
        row = figures["backends"][backend]
        row["batched_texts_per_s"] = round(statistics.median(batched[backend]), 1)
        row["one_by_one_texts_per_s"] = round(statistics.median(single[backend]), 1)
        row["batched_rounds"] = [round(x, 1) for x in batched[backend]]
        row["one_by_one_rounds"] = [round(x, 1) for x in single[backend]]
        if "torch" in encoders:
            row["batched_vs_torch"] = round(statistics.median(
                a / b for a, b in zip(batched[backend], batched["torch"])), 2)
            row["one_by_one_vs_torch"] = round(statistics.median(
                a / b for a, b in zip(single[backend], single["torch"])), 2)
            stats = cosine_stats(whole[backend], whole["torch"])
            row["cosine_to_torch"] = {k: round(v, 6) for k, v in stats.items()}
            worst = int(np.argmin(np.sum(whole[backend] * whole["torch"], axis=1)))
            row["least_similar_text"] = texts[worst][:80]
        indices = [texts.index(t) for t in singles]
        row["cosine_one_by_one_to_batched"] = round(cosine_stats(
            one[backend], whole[backend][indices])["min"], 6)
    return figures


def run_encoder_bench(settings: Settings, args: argparse.Namespace) -> int:
    n = int(getattr(args, "text_events", 2000) or 2000)
    kinds = bench_texts(n, catalog_file=getattr(args, "catalog", None))
    texts = [t for group in kinds.values() for t in group]
    import torch

    threads = settings.torch_threads or torch.get_num_threads()
    print(f"encoder bench: {len(texts)} texts (" +
          ", ".join(f"{len(v)} {k}" for k, v in kinds.items() if v) +
          f"), batches of {settings.encode_batch_size}, {ONE_BY_ONE} one by one, "
          f"{threads} threads, {ROUNDS} rounds")
    figures = measure(ENCODER_BACKENDS, texts, settings)
    figures["threads"] = threads
    print(f"{'backend':<10} {'batched/s':>10} {'x torch':>8} {'1-by-1/s':>9} {'x torch':>8} "
          f"{'cos mean':>9} {'cos min':>8} {'cos p01':>8}")
    for backend, row in figures["backends"].items():
        if "skipped" in row:
            print(f"{backend:<10} skipped: {row['skipped']}")
            continue
        cos = row.get("cosine_to_torch", {})
        print(f"{backend:<10} {row['batched_texts_per_s']:>10.1f} "
              f"{row.get('batched_vs_torch', float('nan')):>8.2f} "
              f"{row['one_by_one_texts_per_s']:>9.1f} "
              f"{row.get('one_by_one_vs_torch', float('nan')):>8.2f} "
              f"{cos.get('mean', float('nan')):>9.5f} {cos.get('min', float('nan')):>8.5f} "
              f"{cos.get('p01', float('nan')):>8.5f}")
    for backend, row in figures["backends"].items():
        if "least_similar_text" in row and backend != "torch":
            print(f"  {backend}: least similar to torch: {row['least_similar_text']!r}; "
                  f"one by one vs batched: cosine >= {row['cosine_one_by_one_to_batched']}")
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0
