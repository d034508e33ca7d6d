"""Shared fakes: stand-ins for what a test does not exercise (never for Kafka or Redis)."""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import urlsplit

import numpy as np


class FakeEncoder:
    """Deterministic unit vectors from a hash: the model stays behind its interface."""

    dim = 8
    version = "fake-1"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:8]
                        .astype(np.float32) - 127.5 for t in texts]) if texts else \
            np.zeros((0, 8), np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)


class ReplyLosingProxy:
    """A TCP proxy in front of Redis that loses replies: once armed with a marker, it
    forwards the next request holding it, lets Redis answer, and closes the client's
    connection instead of passing the answer on. Redis ran the commands; the client only
    sees a dropped connection (and redis-py sends them again on a new one by itself)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.db = parts.path.lstrip("/") or "0"
        self.marker = b""
        self.lost = 0  # replies lost so far
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        """Listen; the URL to connect through."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/{self.db}"

    def arm(self, marker: bytes) -> None:
        self.marker = marker

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        dropping = asyncio.Event()

        async def up() -> None:
            while data := await client_r.read(1 << 16):
                if self.marker and self.marker in data:
                    self.marker = b""
                    dropping.set()
                server_w.write(data)
                await server_w.drain()

        async def down() -> None:
            while data := await server_r.read(1 << 16):
                if dropping.is_set():  # the answer to the marked request: lost
                    await asyncio.sleep(0.05)  # the rest of it, if any, is lost too
                    self.lost += 1
                    break
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            client_w.close()
            server_w.close()


class FakeStream:
    """The part of a Faust stream that ``app.take_batches`` reads: the channel's queue of
    events, ``events()`` pulling from it, ``ack`` and ``enable_acks``. Unit tests of the
    batching logic; the real stream is exercised by the Kafka-tier tests."""

    class _Channel:
        def __init__(self) -> None:
            self.queue: asyncio.Queue = asyncio.Queue()

    def __init__(self) -> None:
        self.channel = self._Channel()
        self.enable_acks = True
        self.acked: list = []

    def put(self, *events) -> None:
        for event in events:
            self.channel.queue.put_nowait(event)

    async def events(self):
        while True:
            await asyncio.sleep(0)  # as Faust's iterator does before each read: others run
            yield await self.channel.queue.get()

    async def ack(self, event) -> bool:
        self.acked.append(event)
        return True
