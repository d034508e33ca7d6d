"""`stream-app replay`: a dataset through Kafka into a running system, judged like `eval`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import urllib.request
from collections import Counter
from typing import Any, Callable, Sequence

from tqdm import tqdm

from stream_app.config import Settings
from stream_app.evaluation.feedback import FeedbackSimulator
from stream_app.evaluation.offline import prequential_windows, round_row, training_summary
from stream_app.evaluation.protocol import judge
from stream_app.kafka_io import Producer, consume, encoded, ensure_topics
from stream_app.loading import load_catalog


CLOCK_SLACK_S = 60.0  # a broker's clock this far behind ours still counts as this run's


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _percentiles(values: list[float], scale: float = 1000.0, unit: str = "_ms",
                 points: Sequence[float] = (0.50, 0.95, 0.99)) -> dict[str, float]:
    """p50/p95/p99 (in ms by default) of seconds."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{round(p * 100)}{unit}":
            round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * scale, 2)
            for p in points}


async def replay(s: Settings, items: Sequence[dict], events: Sequence[dict],
                 rate: float = 0.0, idle_timeout: float = 60.0, progress: bool = True,
                 fine_tune: bool = False, trainer_url: str | None = None) -> dict[str, Any]:
    """Catalog first (waits until embedded), then every event in order; collects the
    recommendation each event triggered, until every event has one or a dead letter
    (the report counts both), or nothing came for ``idle_timeout`` seconds.

    ``fine_tune``: feedback simulated from the log goes to the feedback topic as soon as
    both the list and the user's next event are known; the trainer's announcements are
    collected, and its lag and memory sampled from ``trainer_url`` when given; after the last
    recommendation the replay waits (at most ``trainer_max_wait_s`` plus
    ``idle_timeout``) for a round finished after its last record, so the report
    includes the training the tail of the data triggered.
    """
    begun = time.time()
    bootstrap = s.kafka()
    await ensure_topics(bootstrap, s.topics(), s.topic_partitions, s.topic_replication)
    embedded = await load_catalog(s, bootstrap, items, progress=progress)
    wanted = {e["event_id"] for e in events}
    recs: dict[str, list[str]] = {}
    sent: dict[str, float] = {}  # when the event was handed to the producer
    emitted: dict[str, float] = {}  # when the worker sent its recommendation
    model_versions: set[str] = set()
    rounds: list[dict[str, Any]] = []
    lags: list[float] = []
    memory: list[dict[str, int]] = []
    dead: dict[str, str] = {}  # event id -> why a worker dead-lettered it
    # a sent activity record's sha256 (what a dead letter names it by) -> its event id
    by_hash: dict[bytes, Any] = {}
    simulator = FeedbackSimulator(s.max_feedback_items)
    done = asyncio.Event()  # every event answered: a recommendation or a dead letter
    last_answer = time.monotonic()  # when a recommendation or a dead letter last came
    settled = asyncio.Event()  # a round finished after the replay's last record was sent
    last_sent = math.inf  # set once the replay has sent its last record

    async def give_feedback(producer: Producer, feedback: list[dict[str, Any]]) -> None:
        for fb in feedback:
            await producer.send(s.topic_feedback, fb, key=str(fb["user_id"]))

    def answered() -> None:
        nonlocal last_answer
        last_answer = time.monotonic()
        if len(recs) + len(dead) >= len(wanted):
            done.set()

    async def collect(producer: Producer) -> None:
        with tqdm(total=len(wanted), desc="recommendations", unit="event",
                  disable=not progress) as bar:
            async for _, rec in consume(bootstrap, s.topic_recommendations):
                event_id = rec.get("event_id") if isinstance(rec, dict) else None
                if event_id not in wanted or event_id in recs:
                    continue
                dead.pop(event_id, None)  # a list came after all: it counts, not the letter
                recs[event_id] = [i["item_id"] for i in rec["items"]]
                model_versions.add(rec["model_version"])
                emitted[event_id] = float(rec["emitted_at"])
                if fine_tune:
                    await give_feedback(producer, simulator.on_recommendation(
                        event_id, recs[event_id]))
                bar.update(1)
                answered()
                if done.is_set():
                    return

    async def dead_lettered() -> None:
        """The events a worker dead-lettered: they get no recommendation, and the replay
        does not wait for one (an event that vanished would hold it till the timeout).
        Found by the letter's hash of the whole record, which a cut payload keeps."""
        async for _, letter in consume(bootstrap, s.topic_dead_letters):
            if (not isinstance(letter, dict) or letter.get("source_topic") != s.topic_activity
                    or _number(letter.get("timestamp")) < begun - CLOCK_SLACK_S):
                continue  # another topic's, or an earlier run's letter for the same record
            try:
                event_id = by_hash.get(bytes.fromhex(str(letter.get("payload_sha256"))))
            except ValueError:
                continue
            if event_id is not None and event_id not in recs and event_id not in dead:
                dead[event_id] = str(letter.get("reason"))
                answered()

    async def announcements() -> None:
        async for _, update in consume(bootstrap, s.topic_model_updates, from_beginning=False):
            if isinstance(update, dict) and update.get("type") == "trained":
                rounds.append(update)
                if float(update.get("created_at", 0.0)) >= last_sent:
                    settled.set()

    async def sample_lag() -> None:
        while trainer_url:
            stats = await asyncio.to_thread(_trainer_stats, trainer_url)
            if stats is not None:
                lags.append(float(stats["lag_s"]))
                memory.append(stats.get("memory_bytes") or {})
            await asyncio.sleep(1.0)

    async with Producer(bootstrap) as producer:
        side = [asyncio.create_task(collect(producer)), asyncio.create_task(dead_lettered())]
        if fine_tune:
            side += [asyncio.create_task(announcements()), asyncio.create_task(sample_lag())]
        try:
            await asyncio.sleep(0.5)  # the readers are positioned before the first event
            started = time.perf_counter()
            unflushed = 0
            for n, event in enumerate(events):
                raw = encoded(event)
                by_hash[hashlib.sha256(raw).digest()] = event["event_id"]
                await producer.send(s.topic_activity, raw, key=str(event["user_id"]))
                # latency counts from here: the event is handed to the producer when it is
                # due and flushed at once (a confirmation seen by this busy loop can come
                # later than the worker's answer)
                sent[event["event_id"]] = time.time()
                unflushed += 1
                if fine_tune:
                    await give_feedback(producer, simulator.on_event(event))
                ahead = started + (n + 1) / rate - time.perf_counter() if rate > 0 else 0.0
                if ahead > 0 or unflushed >= 100:  # sent as scheduled, not in bursts
                    await producer.flush()
                    unflushed = 0
                    if ahead > 0:
                        await asyncio.sleep(max(0.0, started + (n + 1) / rate
                                                - time.perf_counter()))
            await producer.flush()
            await _answered(done, side, lambda: last_answer, idle_timeout)
            seconds = time.perf_counter() - started
            settled_after = None
            if fine_tune:
                last_sent = time.time()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(settled.wait(), s.trainer_max_wait_s + idle_timeout)
                    settled_after = round(time.time() - last_sent, 1)
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
    latency = [emitted[e] - t for e, t in sent.items() if e in emitted]
    result = {"catalog_items": embedded, "events": len(events), "rate_limit": rate,
              "recommendations": len(recs),
              "dead_letters": len(dead), "dead_letter_reasons": dict(Counter(dead.values())),
              "unanswered": len(wanted) - len(recs) - len(dead),
              **judge(events, recs).as_dict(),
              "events_per_s": round(len(recs) / seconds, 1), "seconds": round(seconds, 1),
              "latency": _percentiles(latency),
              "latency_over_time": latency_over_time(sent, emitted),
              "model_versions": sorted(model_versions),
              # for the report's charts
              "latency_distribution": latency_distribution(latency),
              "prequential_windows": prequential_windows(events, recs)}
    if fine_tune:
        result["training"] = {**training_summary(rounds), "trainer_lag_s": _lag_summary(lags),
                              "trainer_memory_mb": _memory_summary(memory),
                              "settled_after_last_s": settled_after}
        result["training_rounds"] = [round_row(r) for r in rounds]
    return result


def latency_over_time(sent: dict[str, float], emitted: dict[str, float],
                      stretches: int = 10) -> list[dict[str, Any]]:
    """Latency by stretch of the run: the events sent in each of ``stretches`` equal spans
    of the sending time, with the minute each starts at, how many of them got a list and
    their p50/p95/p99 (ms; none where no event of the stretch got one). Whether a long run
    kept its latency, or where it lost it."""
    if not sent or stretches < 1:
        return []
    first, last = min(sent.values()), max(sent.values())
    width = max(last - first, 1e-9) / stretches
    groups: list[list[float]] = [[] for _ in range(stretches)]
    for event_id, t in sent.items():
        if event_id in emitted:
            groups[min(stretches - 1, int((t - first) / width))].append(emitted[event_id] - t)
    return [{"from_min": round(n * width / 60, 2), "events": len(group), **_percentiles(group)}
            for n, group in enumerate(groups)]


def latency_distribution(values: list[float], bins: int = 40) -> dict[str, Any]:
    """Latencies (seconds) for a chart, in ms: 101 quantiles (p0..p100) and a histogram of
    ``bins`` equal bins from 0 to the 99th percentile (``above``: how many lie past it)."""
    if not values:
        return {}
    ordered = sorted(v * 1000.0 for v in values)
    quantiles = [round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)
                 for q in range(101)]
    top = quantiles[99] if quantiles[99] > 0 else max(ordered[-1], 1.0)
    width = top / bins
    counts = [0] * bins
    above = 0
    for v in ordered:
        if v > top:
            above += 1
        else:
            counts[min(bins - 1, max(0, int(v / width)))] += 1
    return {"quantiles_ms": quantiles,
            "histogram": {"edges_ms": [round(width * n, 3) for n in range(bins + 1)],
                          "counts": counts, "above": above}}


async def _answered(done: asyncio.Event, readers: Sequence[asyncio.Task],
                    last_answer: Callable[[], float], idle_timeout: float) -> None:
    """Until ``done`` (every event answered), or until no answer came for
    ``idle_timeout`` seconds (``last_answer``: time.monotonic() of the latest). A reader
    that failed ends the wait with its error."""
    while not done.is_set():
        for task in readers:
            if task.done() and not task.cancelled():
                task.result()  # raises its error; a reader that returned is just done
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait([waiter, *[t for t in readers if not t.done()]],
                               timeout=max(0.1, last_answer() + idle_timeout - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not done.is_set() and time.monotonic() - last_answer() >= idle_timeout:
            return


def _trainer_stats(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/stats", timeout=2) as resp:
            stats = json.loads(resp.read())
        float(stats["lag_s"])
        return stats
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _memory_summary(samples: list[dict[str, int]]) -> dict[str, dict[str, float]]:
    """Per trainer process: resident MB at the first and last sample, and the most."""
    out: dict[str, dict[str, float]] = {}
    for process in sorted({p for sample in samples for p in sample}):
        mb = [sample[process] / 2**20 for sample in samples if process in sample]
        out[process] = {"first": round(mb[0], 1), "last": round(mb[-1], 1),
                        "max": round(max(mb), 1)}
    return out


def _lag_summary(lags: list[float]) -> dict[str, float]:
    """How far behind the trainer was (seconds), sampled once a second during the replay."""
    if not lags:
        return {}
    return {**_percentiles(lags, 1.0, "", (0.50, 0.95)), "max": round(max(lags), 2),
            "samples": len(lags)}
