"""Fault injection (`stream-app chaos`, `tests/test_chaos.py`): a steady replay of valid
activity events through two workers while a worker is SIGKILLed twice, Redis and the broker
are frozen (SIGSTOP) for 15 s each, Redis is filled to maxmemory once, and oversize, deeply
nested, future-timestamp and huge-rating records are mixed in.

The run starts its own redis-server (so it can freeze it and set maxmemory) and its own
embedded broker (tansu), and afterwards checks, from what it sent:

- each fault took effect (the worker died of SIGKILL, the process was in the stopped state,
  Redis replied OOM to the workers),
- every valid event changed its user's state exactly once (``n_events`` per user in Redis,
  and the event ids the state lists against those sent),
- every valid event got at least one recommendation listing items (duplicates are counted,
  not failed), and no invalid record got one,
- every invalid record is in dead letters with a reason naming its fault, no valid event is,
  and no dead letter is of a record that was never sent,
- no worker exited on its own (a supervisor restarts it, as ``restart: unless-stopped``
  would, and the exit is reported),
- ``/readyz`` said 503 while Redis was stopped, and tells the truth at the end (200 on
  every worker after recovery, 503 somewhere after a stall),
- after each fault, every partition is back to a fresh recommendation (latency under
  ``lag_ok_s``) for events sent after the fault ended: the time to recover,
- the outputs were complete soon after the last event (not stalled, no timeout).

A dead letter is matched to its record by ``payload_sha256`` (hex sha256 of the raw value)
when it has one, by the hash of its payload when that is complete, and by
(topic, partition, offset) from the producer's delivery reports.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stream_app.config import Settings
from stream_app.contract import Limits
from stream_app.embedded import EmbeddedBroker, RedisServer, free_port
from stream_app.logs import log
from stream_app.processes import WorkerProcess

VALID_TYPES = ("view", "click", "like", "purchase", "rate", "skip", "dislike")
BASE_TS = 1.70e9  # valid events are in the past: ts = BASE_TS + n * TS_STEP
TS_STEP = 0.5

# Invalid records per kind (the oversize ones are each ~1 MB through the broker).
INVALID_COUNTS = {"oversize": 6, "deep_nested": 20, "future_ts": 20, "huge_rating": 20}
# What a dead letter's `error` (or `reason`) must name for each kind of invalid record.
REASON_PATTERNS = {
    "oversize": re.compile(r"too[ _-]?(large|big)|size|bytes", re.I),
    "deep_nested": re.compile(r"nest|depth", re.I),
    "future_ts": re.compile(r"ahead|future|skew", re.I),
    "huge_rating": re.compile(r"rating", re.I),
}


@dataclass(frozen=True)
class Fault:
    kind: str  # kill | redis_stop | redis_oom | broker_stop
    at: float  # share of the production time at which it starts
    hold_s: float = 0.0  # how long it lasts (kill: 0)


# Spread over the production time (default 140 s) so that each fault has usually been
# recovered from before the next starts (a figure that was not is flagged); the last fault
# leaves a quarter of the time to show recovery on fresh events.
TIMELINE = (
    Fault("kill", 0.03),
    Fault("redis_stop", 0.18, 15.0),
    Fault("redis_oom", 0.36, 10.0),
    Fault("broker_stop", 0.52, 15.0),
    Fault("kill", 0.74),
)
MIN_DURATION_S = 120.0  # below this the faults of TIMELINE overlap


@dataclass
class Planned:
    """One record of the replay: what was sent, and where it landed."""

    n: int
    kind: str  # "valid" or an INVALID_COUNTS key
    user_id: str
    event_id: str
    value: bytes
    sha256: str
    sent_at: float = 0.0  # wall clock of the first send
    placed: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    resends: int = 0

    @property
    def valid(self) -> bool:
        return self.kind == "valid"


def plan_records(events: int, users: int, item_ids: list[str], limits: Limits, tag: str,
                 invalid_counts: dict[str, int] | None = None, seed: int = 12
                 ) -> list[Planned]:
    """``events`` valid activity events over ``users`` users, with the invalid records
    interleaved at random positions."""
    rng = random.Random(seed)
    counts = INVALID_COUNTS if invalid_counts is None else invalid_counts
    user_ids = [f"cu-{tag}-{u}" for u in range(users)]
    valid: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(events):
        kind = rng.choice(VALID_TYPES)
        ev: dict[str, Any] = {"event_id": f"ce-{tag}-{n}", "user_id": rng.choice(user_ids),
                              "type": kind, "item_id": rng.choice(item_ids),
                              "ts": BASE_TS + n * TS_STEP}
        if kind == "rate":
            ev["rating"] = rng.choice([1.0, 2.0, 3.5, 4.0, 5.0])
        valid.append(("valid", ev["event_id"], ev))
    bad: list[tuple[str, str, str, bytes]] = []
    for kind, count in counts.items():
        for i in range(count):
            event_id = f"cbad-{tag}-{kind}-{i}"
            ev = {"event_id": event_id, "user_id": rng.choice(user_ids), "type": "click",
                  "item_id": rng.choice(item_ids), "ts": BASE_TS + rng.random() * events}
            if kind == "oversize":
                filler = limits.max_bytes + 1024 - len(_dumps(ev)) + (i % 3) * 4096
                raw = _dumps({**ev, "padding": "x" * max(filler, 0)})
                assert len(raw) > limits.max_bytes
            elif kind == "deep_nested":
                # just too deep (the depth count), or deep enough for a RecursionError
                depth = limits.max_json_depth + 8 if i % 2 == 0 else 20000
                raw = _dumps(ev)[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
            elif kind == "future_ts":  # milliseconds sent as seconds
                raw = _dumps({**ev, "ts": round(time.time() * 1000.0, 3)})
            elif kind == "huge_rating":
                raw = _dumps({**ev, "type": "rate", "rating": 1e308 if i % 2 == 0 else 1e6})
            else:
                raise ValueError(f"unknown invalid kind {kind!r}")
            bad.append((kind, event_id, ev["user_id"], raw))
    out: list[Planned] = []
    slots = set(rng.sample(range(len(valid) + len(bad)), len(bad)))
    bad_iter, valid_iter = iter(bad), iter(valid)
    for n in range(len(valid) + len(bad)):
        if n in slots:
            kind, event_id, user_id, raw = next(bad_iter)
        else:
            kind, event_id, ev = next(valid_iter)
            user_id, raw = ev["user_id"], _dumps(ev)
        out.append(Planned(n, kind, user_id, event_id, raw, hashlib.sha256(raw).hexdigest()))
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Slot:
    """One worker position; a kill or an exit starts a replacement in it."""

    name: str
    proc: WorkerProcess
    log: IO[bytes]
    started: float
    healthy_after_s: float | None = None
    killed: bool = False


class _Run:
    """One scenario: the workers, the producer, the output readers, the faults."""

    def __init__(self, s: Settings, planned: list[Planned], log_dir: Path, duration_s: float,
                 lag_ok_s: float, recover_timeout_s: float, stall_timeout_s: float,
                 redis: RedisServer, broker: EmbeddedBroker) -> None:
        self.s = s
        self.planned = planned
        self.log_dir = log_dir
        self.duration_s = duration_s
        self.lag_ok_s = lag_ok_s
        self.recover_timeout_s = recover_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.redis = redis
        self.broker = broker
        self.slots: list[Slot] = []
        self.started_workers = 0
        self.exits: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.rec_first: dict[str, float] = {}  # event_id -> earliest emitted_at
        self.rec_count: Counter = Counter()
        self.rec_records = 0
        self.rec_empty: set[str] = set()  # event ids with a recommendation listing no item
        self.applied_ids: dict[str, tuple[str, ...]] = {}
        self.dead: list[dict[str, Any]] = []
        self.sent = 0
        self.t0 = 0.0
        self.produce_end = 0.0
        self.healthy_tasks: list[asyncio.Task] = []
        # (wall time, worker, /readyz status or "no answer", reasons)
        self.readiness: list[tuple[float, str, int | str, list[str]]] = []
        self.final_readiness: dict[str, Any] = {}

    # --- workers ---------------------------------------------------------------
    def start_worker(self) -> tuple[str, WorkerProcess, IO[bytes]]:
        name = f"worker-{self.started_workers}"
        self.started_workers += 1
        out = open(self.log_dir / f"{name}.log", "ab")
        w = WorkerProcess(self.s.replace(web_port=free_port()), stdout=out).start()
        log("chaos_worker_started", worker=name, pid=w.proc.pid if w.proc else None,
            url=w.url)
        return name, w, out

    def add_slot(self) -> Slot:
        name, w, out = self.start_worker()
        slot = Slot(name, w, out, time.monotonic())
        self.slots.append(slot)
        return slot

    def replace(self, slot: Slot) -> None:
        slot.log.close()
        slot.name, slot.proc, slot.log = self.start_worker()
        slot.started, slot.healthy_after_s, slot.killed = time.monotonic(), None, False
        self.healthy_tasks.append(asyncio.create_task(self._wait_healthy(slot, slot.proc)))

    async def _wait_healthy(self, slot: Slot, proc: WorkerProcess) -> None:
        started = slot.started
        try:
            await asyncio.to_thread(proc.wait_healthy, 240.0)
        except (RuntimeError, TimeoutError) as exc:
            log("chaos_worker_not_healthy", worker=slot.name, error=str(exc))
            return
        if slot.proc is proc:
            slot.healthy_after_s = round(time.monotonic() - started, 2)
            log("chaos_worker_healthy", worker=slot.name, after_s=slot.healthy_after_s)

    async def supervise(self) -> None:
        """A worker that exits on its own is reported and restarted (what a container
        runtime with a restart policy does), at most 20 times."""
        while True:
            await asyncio.sleep(0.5)
            for slot in self.slots:
                p = slot.proc.proc
                if p is None or slot.killed or p.poll() is None:
                    continue
                tail = _tail(self.log_dir / f"{slot.name}.log", 1500)
                self.exits.append({"worker": slot.name, "code": p.returncode,
                                   "at_s": round(time.monotonic() - self.t0, 1),
                                   "log_tail": tail})
                log("chaos_worker_exited", worker=slot.name, code=p.returncode,
                    at_s=self.exits[-1]["at_s"])
                if len(self.exits) <= 20:
                    self.replace(slot)

    # --- producing -----------------------------------------------------------------
    async def produce(self) -> None:
        from aiokafka import AIOKafkaProducer

        biggest = max(len(p.value) for p in self.planned)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap_servers.split(","), acks="all",
            linger_ms=5, max_request_size=biggest + 1024 * 1024, request_timeout_ms=60000)
        await producer.start()
        confirms: list[asyncio.Task] = []
        rate = len(self.planned) / self.duration_s
        try:
            for rec in self.planned:
                due = self.t0 + rec.n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                rec.sent_at = time.time()
                fut = await self._enqueue(producer, rec)
                confirms.append(asyncio.create_task(self._confirm(producer, rec, fut)))
                self.sent += 1
            await producer.flush()
            await asyncio.gather(*confirms)
        finally:
            self.produce_end = time.monotonic()
            await producer.stop()

    async def _enqueue(self, producer: Any, rec: Planned) -> asyncio.Future:
        from aiokafka.errors import KafkaError

        while True:
            try:
                return await producer.send(self.s.topic_activity, rec.value,
                                           key=rec.user_id.encode())
            except KafkaError as exc:
                if rec.resends >= 120:
                    raise RuntimeError(f"record {rec.n} not accepted by the producer") from exc
                rec.resends += 1
                log("chaos_send_retry", n=rec.n, error=repr(exc))
                await asyncio.sleep(1.0)

    async def _confirm(self, producer: Any, rec: Planned, fut: asyncio.Future) -> None:
        from aiokafka.errors import KafkaError

        while True:
            try:
                meta = await fut
                rec.placed.append((meta.partition, meta.offset))
                return
            except KafkaError as exc:  # not delivered: the same bytes again
                if rec.resends >= 120:
                    raise RuntimeError(f"record {rec.n} not delivered") from exc
                rec.resends += 1
                log("chaos_send_retry", n=rec.n, error=repr(exc))
                await asyncio.sleep(1.0)
                fut = await self._enqueue(producer, rec)

    # --- reading outputs -------------------------------------------------------
    async def tail(self, topic: str, handle: Any) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self.s.kafka_bootstrap_servers.split(","), group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100,
            max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                for records in batch.values():
                    for r in records:
                        try:
                            value = json.loads(r.value) if r.value is not None else None
                        except ValueError:
                            value = None
                        handle(r, value)
        finally:
            await consumer.stop()

    def on_recommendation(self, r: Any, value: Any) -> None:
        self.rec_records += 1
        if not isinstance(value, dict) or "event_id" not in value:
            return
        eid = str(value["event_id"])
        self.rec_count[eid] += 1
        if not value.get("items"):
            self.rec_empty.add(eid)
        at = float(value.get("emitted_at") or r.timestamp / 1000.0)
        if eid not in self.rec_first or at < self.rec_first[eid]:
            self.rec_first[eid] = at

    def on_dead_letter(self, r: Any, value: Any) -> None:
        if not isinstance(value, dict):
            self.dead.append({"undecodable": True, "size": len(r.value or b"")})
            return
        dl = {k: v for k, v in value.items() if k != "payload"}
        dl["payload_prefix"] = str(value.get("payload", ""))[:200]
        dl["computed_sha256"] = _payload_sha(value)
        self.dead.append(dl)

    # --- faults ------------------------------------------------------------------
    async def inject(self, timeline: tuple[Fault, ...]) -> None:
        kills = 0
        for fault in timeline:
            delay = self.t0 + fault.at * self.duration_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record: dict[str, Any] = {"fault": fault.kind, "start": time.time(),
                                      "start_s": round(time.monotonic() - self.t0, 1)}
            if fault.kind == "kill":
                slot = self.slots[kills % len(self.slots)]
                kills += 1
                record["fault"] = f"kill {slot.name}"
                log("chaos_fault", fault=record["fault"], pid=slot.proc.proc.pid)
                slot.killed = True
                slot.proc.kill()
                record["end"] = time.time()
                record["took_effect"] = slot.proc.proc.returncode == -signal.SIGKILL
                self.replace(slot)
                record["replacement"] = slot.name
                record["_slot"] = slot
            elif fault.kind in ("redis_stop", "broker_stop"):
                proc = self.redis.proc if fault.kind == "redis_stop" else self.broker._proc
                assert proc is not None
                record["fault"] = f"{fault.kind.split('_')[0]} SIGSTOP {fault.hold_s:g} s"
                log("chaos_fault", fault=record["fault"], pid=proc.pid)
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    record["took_effect"] = _stopped(proc.pid)
                    await asyncio.sleep(fault.hold_s)
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                record["end"] = time.time()
                log("chaos_fault_end", fault=record["fault"])
            elif fault.kind == "redis_oom":
                record["fault"] = f"redis maxmemory {fault.hold_s:g} s"
                log("chaos_fault", fault=record["fault"])
                record.update(await self._fill_redis(fault.hold_s))
                record["end"] = time.time()
                log("chaos_fault_end", fault=record["fault"],
                    **{k: v for k, v in record.items() if k.startswith("filler")
                       or k == "oom_replies"})
            else:
                raise ValueError(f"unknown fault {fault.kind!r}")
            record["end_s"] = round(record["start_s"] + record["end"] - record["start"], 1)
            self.faults.append(record)

    async def _fill_redis(self, hold_s: float) -> dict[str, Any]:
        """maxmemory just above what is used, noeviction, filler keys until Redis answers
        OOM; then maxmemory pinned a little under the memory used, so that every write
        of the workers is refused for ``hold_s`` (freed query buffers cannot make room);
        then the filler deleted and maxmemory 0. Counts the OOM errors Redis replied to
        others meanwhile (INFO errorstats): the evidence that the fault bit."""
        import redis.asyncio as aioredis
        from redis.exceptions import OutOfMemoryError, ResponseError

        r = aioredis.Redis.from_url(self.redis.url, socket_timeout=10)
        filler = 64 * 1024
        keys: list[str] = []
        own_oom = 0
        try:
            before = await _oom_replies(r)
            used = int((await r.info("memory"))["used_memory"])
            await r.config_set("maxmemory-policy", "noeviction")
            await r.config_set("maxmemory", used + 1024 * 1024)
            for i in range(20000):
                key = f"chaos-filler:{i}"
                try:
                    await r.set(key, b"\0" * filler)
                except ResponseError as exc:
                    if not isinstance(exc, OutOfMemoryError) and "OOM" not in str(exc):
                        raise
                    own_oom += 1
                    break
                keys.append(key)
            used = int((await r.info("memory"))["used_memory"])
            await r.config_set("maxmemory", max(used - 256 * 1024, 1024 * 1024))
            await asyncio.sleep(hold_s)
            refused = await _oom_replies(r) - before - own_oom
        finally:
            await r.config_set("maxmemory", 0)
            for start in range(0, len(keys), 200):
                await r.delete(*keys[start:start + 200])
            await r.aclose()
        return {"filler_keys": len(keys), "filler_mb": round(len(keys) * filler / 2**20, 1),
                "oom_replies": refused, "took_effect": own_oom > 0 and refused > 0}

    # --- progress and recovery -------------------------------------------------
    async def redis_stats(self) -> dict[str, int] | None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from stream_app.store import Store

        r = aioredis.Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return await Store(r, self.s.key_prefix).stats()
        except (RedisError, OSError, asyncio.TimeoutError):
            return None
        finally:
            await r.aclose()

    async def applied(self, users: list[str]) -> dict[str, int] | None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from stream_app.store import Store

        r = aioredis.Redis.from_url(self.redis.url, socket_timeout=20, socket_connect_timeout=5)
        try:
            out = {}
            store = Store(r, self.s.key_prefix)
            for start in range(0, len(users), 200):
                got = await store.read_users(users[start:start + 200])
                out.update({u: rec.state.n_events for u, rec in got.items()})
                # the ids of the latest events applied (all of them, up to dedupe_window)
                self.applied_ids.update({u: tuple(getattr(rec.state, "recent_ids", ()))
                                         for u, rec in got.items()})
            return out
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log("chaos_redis_read_failed", error=repr(exc))
            return None
        finally:
            await r.aclose()

    def live(self) -> list[Slot]:
        return [s for s in self.slots if s.proc.proc is not None and s.proc.proc.poll() is None]

    async def watch_readiness(self) -> None:
        """Every worker's /readyz once a second."""
        while True:
            await asyncio.sleep(1.0)
            slots = self.live()
            answers = await asyncio.gather(*(asyncio.to_thread(_readyz, s.proc.url)
                                             for s in slots))
            now = time.time()
            self.readiness += [(now, s.name, status, reasons)
                               for s, (status, reasons) in zip(slots, answers)]

    async def readiness_at_end(self, drained: bool, wait_s: float = 30.0) -> dict[str, Any]:
        """Drained: every live worker should answer /readyz 200 (within ``wait_s``);
        stalled: at least one should say 503 (the stall is not silent)."""
        deadline = time.monotonic() + wait_s
        while True:
            slots = self.live()
            answers = await asyncio.gather(*(asyncio.to_thread(_readyz, s.proc.url)
                                             for s in slots))
            seen = {s.name: {"status": st, "reasons": rs} for s, (st, rs) in zip(slots, answers)}
            statuses = [a["status"] for a in seen.values()]
            done = (all(st == 200 for st in statuses) if drained
                    else any(st == 503 for st in statuses))
            if done or time.monotonic() > deadline:
                return {"workers": seen, "as_expected": bool(done and statuses)}
            await asyncio.sleep(1.0)

    async def progress(self) -> None:
        valid = sum(1 for p in self.planned if p.valid)
        while True:
            await asyncio.sleep(10)
            stats = await self.redis_stats()
            log("chaos_progress", at_s=round(time.monotonic() - self.t0, 1), sent=self.sent,
                of=len(self.planned), recommended=sum(1 for e in self.rec_first
                                                      if not e.startswith("cbad-")),
                valid=valid, dead_letters=len(self.dead),
                workers_alive=sum(1 for s in self.slots
                                  if s.proc.proc and s.proc.proc.poll() is None),
                redis_stats=stats if stats is not None else "unreachable")

    async def wait_recovered(self, expected: dict[str, int]) -> dict[str, Any]:
        """Until every valid event is applied and recommended and every invalid record is
        dead-lettered; gives up at the timeout, or when nothing moved for a while."""
        valid_ids = [p.event_id for p in self.planned if p.valid]
        users = sorted(expected)
        started = time.monotonic()
        last_change, last_sig = started, None
        outcome = "timeout"
        applied: dict[str, int] | None = None
        while True:
            got = await self.applied(users)
            applied = got if got is not None else applied
            recommended = sum(1 for e in valid_ids if e in self.rec_first)
            behind = (sum(1 for u in users if (applied or {}).get(u, 0) < expected[u])
                      if applied is not None else len(users))
            undead = len(self._invalid_missing())
            sig = (recommended, len(self.dead), sum((applied or {}).values()), self.rec_records)
            now = time.monotonic()
            if sig != last_sig:
                last_sig, last_change = sig, now
            if recommended == len(valid_ids) and behind == 0 and undead == 0:
                outcome = "recovered"
                break
            if now - last_change > self.stall_timeout_s:
                outcome = "stalled"
                break
            if now - started > self.recover_timeout_s:
                break
            log("chaos_recovering", waited_s=round(now - started, 1),
                recommended=recommended, of=len(valid_ids), users_behind=behind,
                invalid_not_dead_lettered=undead)
            await asyncio.sleep(2.0)
        await asyncio.sleep(3.0)  # late duplicates and dead letters still count
        final = await self.applied(users)
        log("chaos_outputs_settled", outcome=outcome,
            waited_s=round(time.monotonic() - started, 1))
        return {"outcome": outcome, "applied": final if final is not None else applied or {},
                "drain_s": round(time.monotonic() - started, 1)}

    def _match_tables(self) -> tuple[dict[str, list[Planned]], dict[tuple, Planned]]:
        by_sha: dict[str, list[Planned]] = defaultdict(list)
        by_pos: dict[tuple, Planned] = {}
        for p in self.planned:
            by_sha[p.sha256].append(p)
            for part, off in p.placed:
                by_pos[(self.s.topic_activity, part, off)] = p
        return by_sha, by_pos

    def match(self, dl: dict[str, Any], by_sha: dict[str, list[Planned]],
              by_pos: dict[tuple, Planned]) -> Planned | None:
        for sha in (dl.get("payload_sha256"), dl.get("computed_sha256")):
            if sha and sha in by_sha:
                return by_sha[sha][0]
        try:
            pos = (dl.get("source_topic"), int(dl.get("partition")), int(dl.get("offset")))
        except (TypeError, ValueError):
            return None
        return by_pos.get(pos)

    def _invalid_missing(self) -> list[Planned]:
        by_sha, by_pos = self._match_tables()
        found = {id(m) for dl in self.dead if (m := self.match(dl, by_sha, by_pos))}
        return [p for p in self.planned if not p.valid and id(p) not in found]


async def _oom_replies(r: Any) -> int:
    """How many OOM errors Redis has replied since it started."""
    stats = await r.info("errorstats")
    return int((stats.get("errorstat_OOM") or {}).get("count", 0))


def _stopped(pid: int, timeout: float = 2.0) -> bool:
    """The process is in the stopped state (SIGSTOP took effect)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                    return True
        except (OSError, IndexError):
            return False
        time.sleep(0.01)
    return False


def _readyz(url: str) -> tuple[int | str, list[str]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=3) as resp:
            return resp.status, []
    except urllib.error.HTTPError as err:
        try:
            reasons = [str(r)[:160] for r in json.loads(err.read()).get("reasons", [])]
        except (ValueError, AttributeError):
            reasons = []
        return err.code, reasons
    except (urllib.error.URLError, OSError):
        return "no answer", []


def _payload_sha(value: dict[str, Any]) -> str | None:
    """The hash of a dead letter's payload when it is the whole record value."""
    payload = value.get("payload")
    if not isinstance(payload, str) or value.get("payload_truncated"):
        return None
    if value.get("payload_bytes") is not None and value.get("payload_encoding") != "base64" \
            and len(payload.encode("utf-8")) != value.get("payload_bytes"):
        return None
    try:
        raw = (base64.b64decode(payload) if value.get("payload_encoding") == "base64"
               else payload.encode("utf-8"))
    except ValueError:
        return None
    return hashlib.sha256(raw).hexdigest()


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _log_digest(log_dir: Path) -> dict[str, Any]:
    """Counts of the workers' structured log events, tracebacks, and distinct errors."""
    events: Counter = Counter()
    errors: Counter = Counter()
    tracebacks = 0
    for path in sorted(log_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                events[obj.get("event", "?")] += 1
                if obj.get("error"):
                    errors[f'{obj.get("event")}: {str(obj["error"])[:160]}'] += 1
            elif re.search(r"\b(Error|Exception|crashed)\b", line) and "Traceback" not in line:
                errors[line.strip()[:200]] += 1
    return {"events": dict(events), "tracebacks": tracebacks,
            "top_errors": [{"n": n, "line": line} for line, n in errors.most_common(12)]}


def _recovery(run: _Run, fault: dict[str, Any], partitions: int,
              next_start: float | None) -> dict[str, Any]:
    """From the fault's end: the first recommendation of an event sent after it, on any
    partition and on every partition, and the first one on every partition whose latency
    (emitted - sent) was back under ``lag_ok_s``; whether the next fault began before that
    (then the figure includes it)."""
    end = fault["end"]
    first: dict[int, float] = {}
    fresh: dict[int, float] = {}
    worst = 0.0  # latency of events sent from the fault's start until 10 s after its end
    for p in run.planned:
        if not p.valid or not p.placed:
            continue
        emitted = run.rec_first.get(p.event_id)
        if emitted is None:
            continue
        if fault["start"] <= p.sent_at <= end + 10.0:
            worst = max(worst, emitted - p.sent_at)
        if p.sent_at < end:
            continue
        part = p.placed[0][0]
        first[part] = min(first.get(part, emitted), emitted)
        if emitted - p.sent_at <= run.lag_ok_s:
            fresh[part] = min(fresh.get(part, emitted), emitted)
    complete = len(first) == partitions
    recovered_at = max(fresh.values()) if len(fresh) == partitions else None
    during = [(w, st) for t, w, st, _ in run.readiness if fault["start"] <= t <= end]
    readiness = {w: {"samples": sum(1 for x, _ in during if x == w),
                     "not_ready": sum(1 for x, st in during if x == w and st == 503),
                     "no_answer": sum(1 for x, st in during if x == w and st == "no answer")}
                 for w in sorted({w for w, _ in during})}
    return {
        "fault": fault["fault"], "start_s": fault["start_s"], "end_s": fault["end_s"],
        "first_recommendation_s": round(min(first.values()) - end, 2) if first else None,
        "all_partitions_s": round(max(first.values()) - end, 2) if complete else None,
        "recovered_s": round(recovered_at - end, 2) if recovered_at is not None else None,
        "next_fault_before_recovery": next_start is not None and (
            recovered_at is None or recovered_at > next_start),
        "max_latency_s": round(worst, 2),
        "per_partition_first_s": {p: round(t - end, 2) for p, t in sorted(first.items())},
        "per_partition_recovered_s": {p: round(t - end, 2) for p, t in sorted(fresh.items())},
        **({"replacement_healthy_s": fault["_slot"].healthy_after_s}
           if "_slot" in fault and fault["_slot"].name == fault.get("replacement") else {}),
        "took_effect": bool(fault.get("took_effect")),
        "readiness_during": readiness,
        **{k: v for k, v in fault.items() if k.startswith("filler") or k == "oom_replies"},
    }


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": bool(ok), "detail": detail}


def _report(run: _Run, settled: dict[str, Any], expected: dict[str, int],
            timing: dict[str, Any]) -> dict[str, Any]:
    planned = run.planned
    valid = [p for p in planned if p.valid]
    invalid = [p for p in planned if not p.valid]
    valid_ids = {p.event_id for p in valid}
    invalid_ids = {p.event_id for p in invalid}

    applied = settled["applied"]
    short = {u: (applied.get(u, 0), n) for u, n in expected.items() if applied.get(u, 0) < n}
    over = {u: (applied.get(u, 0), n) for u, n in expected.items() if applied.get(u, 0) > n}

    # which events: each user's state lists the ids it applied (up to dedupe_window)
    sent_ids: dict[str, set[str]] = defaultdict(set)
    for p in valid:
        sent_ids[p.user_id].add(p.event_id)
    window = run.s.dedupe_window
    ids_lost, ids_foreign, ids_twice, ids_users = [], [], [], 0
    for u, ids in run.applied_ids.items():
        if len(sent_ids[u]) > window or not ids and not sent_ids[u]:
            continue
        ids_users += 1
        ids_lost += sorted(sent_ids[u] - set(ids))
        ids_foreign += sorted(set(ids) - sent_ids[u])
        ids_twice += [e for e, n in Counter(ids).items() if n > 1]

    missing_recs = [p for p in valid if p.event_id not in run.rec_first]
    empty_recs = sorted(e for e in run.rec_empty if e in valid_ids)
    invalid_recs = sorted(e for e in run.rec_first if e in invalid_ids)
    unknown_recs = sorted(e for e in run.rec_first if e not in valid_ids and e not in invalid_ids)
    rec_dupes = sum(n - 1 for e, n in run.rec_count.items() if e in valid_ids)

    by_sha, by_pos = run._match_tables()
    matched: dict[int, list[dict[str, Any]]] = defaultdict(list)
    valid_dead: list[tuple[Planned, dict[str, Any]]] = []
    unmatched: list[dict[str, Any]] = []
    for dl in run.dead:
        p = run.match(dl, by_sha, by_pos)
        if p is None:
            unmatched.append(dl)
        elif p.valid:
            valid_dead.append((p, dl))
        else:
            matched[id(p)].append(dl)
    invalid_missing = [p for p in invalid if id(p) not in matched]
    wrong_reason = []
    for p in invalid:
        for dl in matched.get(id(p), []):
            text = f'{dl.get("reason") or ""} {dl.get("error") or ""}'
            if not str(dl.get("error") or "").strip() or not REASON_PATTERNS[p.kind].search(text):
                wrong_reason.append((p, dl))
    valid_dead_ids = sorted({p.event_id for p, _ in valid_dead})
    reasons = Counter(str(dl.get("reason") or _error_class(dl.get("error"))) for dl in run.dead)

    starts = [f["start"] for f in run.faults[1:]] + [None]
    recoveries = [_recovery(run, f, run.s.topic_partitions, nxt)
                  for f, nxt in zip(run.faults, starts)]
    redis_ready = next((r["readiness_during"] for r in recoveries
                        if r["fault"].startswith("redis SIGSTOP")), {})
    # a worker whose HTTP server never answered during the stop (a replacement still
    # loading the model) says nothing about readiness; every worker that answered must
    # have said 503 at least once
    answered = {w: r for w, r in redis_ready.items() if r["samples"] > r["no_answer"]}
    stats = settled.get("stats") or {}

    def examples(items: list, n: int = 5) -> list:
        return items[:n]

    checks = {
        "faults_took_effect": _check(
            all(r["took_effect"] for r in recoveries) and len(recoveries) == len(TIMELINE),
            "; ".join(f'{r["fault"]}: {"yes" if r["took_effect"] else "NO"}'
                      + (f' ({r["oom_replies"]} OOM replies)' if "oom_replies" in r else "")
                      for r in recoveries)),
        "applied_exactly_once": _check(
            not short and not over and not ids_lost and not ids_foreign and not ids_twice,
            f"{len(expected) - len(short) - len(over)}/{len(expected)} users exact; "
            f"{len(short)} short by {sum(n - a for a, n in short.values())} events, "
            f"{len(over)} over by {sum(a - n for a, n in over.values())}; applied ids of "
            f"{ids_users} users: {len(ids_lost)} sent but not applied, {len(ids_foreign)} "
            f"applied but not sent valid, {len(ids_twice)} twice"),
        "every_valid_event_recommended": _check(
            not missing_recs, f"{len(valid) - len(missing_recs)}/{len(valid)} valid events "
            f"recommended ({len(missing_recs)} without a recommendation)"),
        "recommendations_list_items": _check(
            not empty_recs, f"{len(empty_recs)} valid events with a recommendation listing "
            "no item"),
        "no_recommendation_for_invalid": _check(
            not invalid_recs and not unknown_recs,
            f"{len(invalid_recs)} invalid records and {len(unknown_recs)} unknown event ids "
            "recommended"),
        "every_invalid_dead_lettered": _check(
            not invalid_missing, f"{len(invalid) - len(invalid_missing)}/{len(invalid)} invalid "
            f"records in dead letters; missing by kind "
            f"{dict(Counter(p.kind for p in invalid_missing))}"),
        "dead_letter_names_reason": _check(
            not wrong_reason, f"{len(wrong_reason)} dead letters of invalid records with an "
            "empty error or one not naming the fault"),
        "no_valid_event_dead_lettered": _check(
            not valid_dead, f"{len(valid_dead_ids)} valid events in dead letters "
            f"({len(valid_dead)} dead letters)"),
        "no_unknown_dead_letters": _check(
            not unmatched, f"{len(unmatched)} dead letters match no record sent"),
        "no_worker_exited": _check(
            not run.exits, f"{len(run.exits)} unexpected worker exits"),
        "readiness_during_redis_stop": _check(
            bool(answered) and all(r["not_ready"] > 0 for r in answered.values()),
            "/readyz 503 answers / samples while Redis was stopped (a worker that answered "
            "none, such as a replacement still starting, is not judged): " + ", ".join(
                f'{w} {r["not_ready"]}/{r["samples"]} ({r["no_answer"]} unanswered)'
                for w, r in redis_ready.items())),
        "readiness_at_end": _check(
            bool(run.final_readiness.get("as_expected")),
            ("after recovery every worker should be ready" if settled["outcome"] == "recovered"
             else "after a stall some worker should say it is not ready") + ": " + ", ".join(
                f'{w} {a["status"]} {a["reasons"][:2]}'
                for w, a in run.final_readiness.get("workers", {}).items())),
        "recovered_after_each_fault": _check(
            all(r["recovered_s"] is not None for r in recoveries) and
            len(recoveries) == len(TIMELINE),
            "; ".join(f'{r["fault"]}: {r["recovered_s"]}' for r in recoveries)),
        "drained": _check(settled["outcome"] == "recovered",
                          f'outputs complete after the last event: {settled["outcome"]} '
                          f'after {settled["drain_s"]} s'),
    }
    return {
        "ok": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "events": {"valid": len(valid), "invalid": len(invalid),
                   "invalid_by_kind": dict(Counter(p.kind for p in invalid)),
                   "users": len(expected), "records_sent": run.sent,
                   "resends": sum(p.resends for p in planned),
                   "undelivered": sum(1 for p in planned if not p.placed)},
        "applied": {"events": sum(applied.get(u, 0) for u in expected),
                    "expected": len(valid), "users_exact": len(expected) - len(short) - len(over),
                    "users_short": len(short), "users_over": len(over),
                    "short_examples": examples([{"user": u, "applied": a, "sent": n}
                                                for u, (a, n) in short.items()]),
                    "over_examples": examples([{"user": u, "applied": a, "sent": n}
                                               for u, (a, n) in over.items()]),
                    "ids_checked_users": ids_users,
                    "ids_not_applied_examples": examples(ids_lost),
                    "ids_foreign_examples": examples(ids_foreign),
                    "ids_twice_examples": examples(ids_twice)},
        "recommended": {"events": len(valid) - len(missing_recs), "records": run.rec_records,
                        "duplicates": rec_dupes, "missing": len(missing_recs),
                        "missing_examples": examples([p.event_id for p in missing_recs]),
                        "missing_by_partition": dict(Counter(
                            p.placed[0][0] if p.placed else -1 for p in missing_recs)),
                        "empty_lists": len(empty_recs),
                        "for_invalid": len(invalid_recs),
                        "for_invalid_examples": examples(invalid_recs)},
        "dead_letters": {"records": len(run.dead),
                         "invalid_matched": len(invalid) - len(invalid_missing),
                         "invalid_missing": len(invalid_missing),
                         "invalid_missing_examples": examples(
                             [f"{p.kind} {p.event_id} at {p.placed}" for p in invalid_missing]),
                         "valid_events": len(valid_dead_ids),
                         "valid_examples": examples(
                             [{"event_id": p.event_id, "error": dl.get("error"),
                               "reason": dl.get("reason")} for p, dl in valid_dead]),
                         "wrong_reason_examples": examples(
                             [{"kind": p.kind, "error": dl.get("error"),
                               "reason": dl.get("reason")} for p, dl in wrong_reason]),
                         "unmatched": len(unmatched),
                         "unmatched_examples": examples(unmatched),
                         "by_reason": dict(reasons.most_common())},
        "faults": recoveries,
        "workers": {"started": run.started_workers, "killed": sum(
            1 for f in run.faults if f["fault"].startswith("kill")),
            "unexpected_exits": [{k: v for k, v in e.items() if k != "log_tail"}
                                 for e in run.exits],
            "exit_log_tails": [e["log_tail"][-800:] for e in run.exits[:3]]},
        "deployment_stats": stats,
        "readiness_at_end": run.final_readiness,
        "timing": timing,
        "settings": {"key_prefix": run.s.key_prefix, "partitions": run.s.topic_partitions,
                     "workers": len(run.slots), "rate_per_s": round(
                         len(planned) / run.duration_s, 1), "lag_ok_s": run.lag_ok_s},
    }


def _error_class(error: Any) -> str:
    """A short label of a dead letter's error, for counting (before `reason` codes)."""
    text = str(error or "")
    m = re.match(r"processing failed: (\w+)", text)
    if m:
        return f"processing failed: {m.group(1)}"
    return re.sub(r"\d[\d.e+-]*", "N", text)[:60]


def run_chaos(settings_base: Settings, events: int = 20000, users: int = 300,
              duration_s: float = 140.0, lag_ok_s: float = 3.0,
              recover_timeout_s: float = 300.0, stall_timeout_s: float = 60.0,
              log_dir: str | Path | None = None, keep_logs: bool = False,
              invalid_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The whole scenario; returns the report (``report["ok"]``: every check passed).

    Production of all records is paced over ``duration_s`` seconds (20,000 events: 143/s);
    the faults of ``TIMELINE`` happen at their share of it.
    """
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"duration_s must be >= {MIN_DURATION_S:g} so the faults do not "
                         "overlap")
    from stream_app.catalog_files import read_jsonl
    from stream_app.demo import bundled
    from stream_app.kafka_io import ensure_topics
    from stream_app.loading import load_catalog

    began = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    own_dir = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="stream-app-chaos-")) if own_dir else Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(log_path=logs / "redis.log")
    broker = EmbeddedBroker()
    run: _Run | None = None
    report: dict[str, Any] | None = None
    try:
        redis.start()
        broker.start()
        s = settings_base.replace(
            kafka_bootstrap_servers=broker.bootstrap, redis_url=redis.url,
            key_prefix=f"{settings_base.key_prefix}-chaos-{tag}",
            app_id=f"{settings_base.app_id}-chaos-{tag}", topic_partitions=4,
            torch_threads=settings_base.torch_threads or 1, log_level="info")
        items = list(read_jsonl(bundled("sample_catalog.jsonl")))
        planned = plan_records(events, users, [str(i["item_id"]) for i in items], s.limits(),
                               tag, invalid_counts)
        expected = Counter(p.user_id for p in planned if p.valid)
        for p in planned:
            expected.setdefault(p.user_id, 0)
        asyncio.run(ensure_topics(s.kafka_bootstrap_servers, s.topics(), s.topic_partitions,
                                  s.topic_replication))
        run = _Run(s, planned, logs, duration_s, lag_ok_s, recover_timeout_s,
                   stall_timeout_s, redis, broker)
        for _ in range(2):
            run.add_slot()
        log("chaos_setup", log_dir=str(logs), key_prefix=s.key_prefix,
            bootstrap=s.kafka_bootstrap_servers, redis=s.redis_url,
            records=len(planned), valid=events, invalid=len(planned) - events)
        for slot in run.slots:
            slot.proc.wait_healthy(240)
            slot.healthy_after_s = round(time.monotonic() - slot.started, 2)
        loaded = asyncio.run(load_catalog(s, s.kafka_bootstrap_servers, items, timeout=180,
                                          progress=False))
        if loaded != len(items):
            raise RuntimeError(f"catalog: {loaded} of {len(items)} items embedded")
        _wait_catalog(run.slots, len(items), 60.0)
        setup_s = time.monotonic() - began
        log("chaos_ready", setup_s=round(setup_s, 1),
            rate_per_s=round(len(planned) / duration_s, 1))
        settled = asyncio.run(_main(run, dict(expected)))
        timing = {"setup_s": round(setup_s, 1),
                  "produce_s": round(run.produce_end - run.t0, 1),
                  "drain_s": settled["drain_s"],
                  "total_s": round(time.monotonic() - began, 1)}
        report = _report(run, settled, dict(expected), timing)
        report["worker_logs"] = _log_digest(logs)
        report["log_dir"] = str(logs)
        (logs / "report.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    finally:
        if run is not None:
            for slot in run.slots:
                slot.proc.stop(20)
                slot.log.close()
        for proc in (redis.proc, broker._proc):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        try:
            shutil.copyfile(broker._log.name, logs / "tansu.log")
        except OSError:
            pass
        broker.stop()
        redis.stop()
        if own_dir and not keep_logs and report is not None and report["ok"]:
            shutil.rmtree(logs, ignore_errors=True)
            report["log_dir"] = None
        if report is not None:
            report["timing"]["total_s"] = round(time.monotonic() - began, 1)
        log("chaos_finished", ok=report["ok"] if report else None, log_dir=str(logs))


async def _main(run: _Run, expected: dict[str, int]) -> dict[str, Any]:
    run.t0 = time.monotonic()
    background = [asyncio.create_task(run.tail(run.s.topic_recommendations,
                                               run.on_recommendation)),
                  asyncio.create_task(run.tail(run.s.topic_dead_letters, run.on_dead_letter)),
                  asyncio.create_task(run.supervise()),
                  asyncio.create_task(run.watch_readiness()),
                  asyncio.create_task(run.progress())]
    try:
        injector = asyncio.create_task(run.inject(TIMELINE))
        await run.produce()
        await injector
        log("chaos_produced", records=run.sent, seconds=round(run.produce_end - run.t0, 1))
        settled = await run.wait_recovered(expected)
        settled["stats"] = await run.redis_stats()
        run.final_readiness = await run.readiness_at_end(settled["outcome"] == "recovered")
        for task in run.healthy_tasks:
            if not task.done():
                await asyncio.wait([task], timeout=30)
        return settled
    finally:
        for task in background + run.healthy_tasks:
            task.cancel()
        await asyncio.gather(*background, *run.healthy_tasks, return_exceptions=True)


def _wait_catalog(slots: list[Slot], items: int, timeout: float) -> None:
    """Every worker ranks against the whole catalog before the first event."""
    deadline = time.monotonic() + timeout
    for slot in slots:
        while True:
            try:
                with urllib.request.urlopen(slot.proc.url + "/stats", timeout=2) as resp:
                    if json.loads(resp.read()).get("catalog_items", 0) >= items:
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{slot.name}: catalog not loaded after {timeout}s")
            time.sleep(0.25)


def format_report(report: dict[str, Any]) -> str:
    """The figures and checks for a terminal."""
    ev, ap, rc, dl = (report["events"], report["applied"], report["recommended"],
                      report["dead_letters"])
    lines = [
        f"chaos run: {'PASSED' if report['ok'] else 'FAILED'}  "
        f"({report['settings']['workers']} workers, {report['settings']['partitions']} "
        f"partitions, {report['settings']['rate_per_s']} records/s)",
        "",
        f"events in     {ev['valid']} valid, {ev['invalid']} invalid "
        f"{ev['invalid_by_kind']}, {ev['users']} users, {ev['resends']} resent, "
        f"{ev['undelivered']} undelivered",
        f"applied       {ap['events']} of {ap['expected']} (users exact {ap['users_exact']}, "
        f"short {ap['users_short']}, over {ap['users_over']}; event ids checked for "
        f"{ap['ids_checked_users']} users)",
        f"recommended   {rc['events']} of {ev['valid']} events ({rc['records']} records, "
        f"{rc['duplicates']} duplicates, {rc['missing']} missing, {rc['empty_lists']} with no "
        f"item, {rc['for_invalid']} for invalid records)",
        f"dead-lettered {dl['records']} records: {dl['invalid_matched']} of {ev['invalid']} "
        f"invalid, {dl['valid_events']} valid events, {dl['unmatched']} unmatched",
    ]
    if dl["by_reason"]:
        lines.append("  by reason: " + ", ".join(f"{k} x{v}" for k, v in
                                                  list(dl["by_reason"].items())[:10]))
    lines += ["", "time to recover, seconds from the fault's end (first: a recommendation of an "
              "event sent after it; all-part: on every partition; recovered: on every "
              f"partition with latency <= {report['settings']['lag_ok_s']} s)",
              "fault                      start   end   first  all-part  recovered  "
              "max-latency"]
    for f in report["faults"]:
        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.1f}"
        extra = (f"  (replacement healthy after {f['replacement_healthy_s']} s)"
                 if f.get("replacement_healthy_s") is not None else "")
        if f.get("next_fault_before_recovery"):
            extra += "  * the next fault began before this one was recovered from"
        lines.append(f"{f['fault']:<26} {f['start_s']:>5.1f} {f['end_s']:>5.1f} "
                     f"{fmt(f['first_recommendation_s']):>7} {fmt(f['all_partitions_s']):>9} "
                     f"{fmt(f['recovered_s']):>10} {fmt(f['max_latency_s']):>12}{extra}")
    for f in report["faults"]:
        if f.get("readiness_during"):
            lines.append(f"  /readyz during {f['fault']}: " + ", ".join(
                f"{w} {r['not_ready']}/{r['samples']} not ready"
                + (f" ({r['no_answer']} unanswered)" if r["no_answer"] else "")
                for w, r in f["readiness_during"].items()))
    w = report["workers"]
    lines += ["", f"workers: {w['started']} started, {w['killed']} killed, "
              f"{len(w['unexpected_exits'])} exited on their own"]
    t = report["timing"]
    lines.append(f"timing: setup {t['setup_s']} s, produce {t['produce_s']} s, drain "
                 f"{t['drain_s']} s, total {t['total_s']} s")
    if report.get("deployment_stats"):
        lines.append(f"deployment counters: {report['deployment_stats']}")
    lines += ["", "checks:"]
    for name, c in report["checks"].items():
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {name}: {c['detail']}")
    if not report["ok"]:
        wl = report.get("worker_logs") or {}
        lines += ["", f"worker log events: {wl.get('events')}",
                  f"tracebacks in worker logs: {wl.get('tracebacks')}"]
        for e in wl.get("top_errors", []):
            lines.append(f"  {e['n']:>6} x {e['line']}")
        for key in ("valid_examples", "wrong_reason_examples", "unmatched_examples",
                    "invalid_missing_examples"):
            if dl.get(key):
                lines.append(f"{key}: {json.dumps(dl[key], default=str)[:1500]}")
        if rc.get("missing_examples"):
            lines.append(f"missing recommendations, e.g. {rc['missing_examples']}, by "
                         f"partition {rc['missing_by_partition']}")
        if ap.get("short_examples") or ap.get("over_examples"):
            lines.append(f"applied short {ap['short_examples']} over {ap['over_examples']}")
        for key in ("ids_not_applied_examples", "ids_foreign_examples", "ids_twice_examples"):
            if ap.get(key):
                lines.append(f"{key}: {ap[key]}")
        for e in w["unexpected_exits"]:
            lines.append(f"exit: {e}")
        if report.get("log_dir"):
            lines.append(f"logs kept in {report['log_dir']}")
    return "\n".join(lines)
