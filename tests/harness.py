"""Driving real workers from tests: start/kill processes, produce, collect, query HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from stream_app.config import Settings
from stream_app.embedded import free_port
from stream_app.kafka_io import Producer, consume, ensure_topics
from stream_app.processes import WorkerProcess
from stream_app.store import Store, connect


def run_python(code: str, timeout: float = 120, **options: Any
               ) -> subprocess.CompletedProcess:
    """``code`` run by this interpreter in a fresh process (what a process imports first,
    or at all), its output captured as text; ``options`` go to ``subprocess.run``."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, **options)


class Harness:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    def start_worker(self) -> WorkerProcess:
        log = open(self.log_dir / f"worker-{len(self.workers)}.log", "wb")
        w = WorkerProcess(self.settings.replace(web_port=free_port()), stdout=log).start()
        self.workers.append(w)
        return w

    def start_trainer(self) -> WorkerProcess:
        log = open(self.log_dir / "trainer-0.log", "wb")
        t = WorkerProcess(self.settings.replace(web_port=free_port()), stdout=log,
                          command="trainer").start()
        self.workers.append(t)
        return t

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()

    def ensure_topics(self) -> None:
        s = self.settings
        asyncio.run(ensure_topics(s.kafka(), s.topics(), s.topic_partitions,
                                  s.topic_replication))

    def produce(self, topic: str, values: Iterable[dict[str, Any] | tuple[str | None, bytes]],
                key_field: str | None = "user_id") -> None:
        """dicts are JSON-encoded and keyed by ``key_field``; (key, bytes) pairs go as they are."""
        async def go() -> None:
            async with Producer(self.settings.kafka()) as p:
                for v in values:
                    if isinstance(v, tuple):
                        await p.send(topic, v[1], key=v[0])
                    else:
                        key = str(v[key_field]) if key_field and key_field in v else None
                        await p.send(topic, v, key=key)
        asyncio.run(go())

    def collect(self, topic: str, want: Callable[[list[Any]], bool],
                timeout: float = 60.0) -> list[Any]:
        """Every value of ``topic`` from the beginning, until ``want(values)`` holds."""
        async def go() -> list[Any]:
            values: list[Any] = []
            gen = consume(self.settings.kafka(), topic, idle_timeout=None)
            try:
                deadline = time.monotonic() + timeout
                while not want(values):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{topic}: condition not met; {len(values)} values")
                    try:
                        _, value = await asyncio.wait_for(gen.__anext__(), left)
                    except asyncio.TimeoutError:
                        continue
                    values.append(value)
                return values
            finally:
                await gen.aclose()
        return asyncio.run(go())

    def recommendations_for(self, event_ids: set[str], timeout: float = 60.0) -> list[dict]:
        recs = self.collect(self.settings.topic_recommendations,
                            lambda vs: event_ids <= {v.get("event_id") for v in vs}, timeout)
        return [r for r in recs if r.get("event_id") in event_ids]


def http(worker: WorkerProcess, path: str, token: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(
        worker.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        body, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in ctype else body.decode()


def delete_keys(settings: Settings) -> None:
    async def go() -> None:
        store = Store.for_settings(connect(settings.redis()), settings)
        await store.delete_prefix()
        await store.r.aclose()

    asyncio.run(go())


@contextmanager
def running(settings: Settings, log_dir: Path) -> Iterator[Harness]:
    """Topics created; worker logs printed on failure; workers stopped and keys removed after."""
    h = Harness(settings, log_dir)
    h.ensure_topics()
    try:
        yield h
    except BaseException:
        print(h.worker_logs())
        raise
    finally:
        h.stop_all()
        delete_keys(settings)


def wait_catalog(workers: Iterable[WorkerProcess], items: int, timeout: float = 60.0,
                 token: str = "") -> None:
    """Until every worker has ``items`` items in its catalog (each embeds its partitions'
    items and syncs the others' from Redis): activity sent earlier is dead-lettered."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while http(worker, "/stats", token)[1].get("catalog_items") != items:
            if time.monotonic() > deadline:
                raise TimeoutError(f"catalog of {worker.url} never reached {items} items")
            time.sleep(0.25)
