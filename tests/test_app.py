"""``app.take_batches`` without a broker: what a batch holds and when it is acknowledged
(the Kafka-tier tests run the same code under a real Faust worker)."""

from __future__ import annotations

import asyncio

from stream_app.app import take_batches
from tests.fakes import FakeStream


def test_a_batch_is_what_is_ready_and_is_acknowledged_after_its_step() -> None:
    async def scenario() -> None:
        stream = FakeStream()
        batches = take_batches(stream, 3, 0.0)
        stream.put("a")
        assert await asyncio.wait_for(batches.__anext__(), 1) == ["a"]  # alone: no wait
        assert stream.enable_acks is False and stream.acked == []  # held until done
        stream.put("b", "c", "d", "e")  # arrived while "a" was processed
        assert await batches.__anext__() == ["b", "c", "d"]  # at most 3
        assert stream.acked == ["a"]
        assert await batches.__anext__() == ["e"]
        assert stream.acked == ["a", "b", "c", "d"]
        waiting = asyncio.ensure_future(batches.__anext__())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing ready: no empty batch
        stream.put("f")
        assert await asyncio.wait_for(waiting, 1) == ["f"]
        await batches.aclose()
        assert stream.acked == list("abcdef") and stream.enable_acks is True

    asyncio.run(scenario())


def test_a_closed_batch_is_acknowledged_once() -> None:
    async def scenario() -> None:
        stream = FakeStream()
        batches = take_batches(stream, 10, 0.0)
        stream.put("a", "b")
        assert await batches.__anext__() == ["a", "b"]
        await batches.aclose()  # the worker stopping between steps
        assert stream.acked == ["a", "b"] and stream.enable_acks is True

    asyncio.run(scenario())


def test_a_batch_goes_when_its_ready_records_are_cleared_away() -> None:
    """A rebalance clears the stream's queue and then waits for every event taken to be
    acknowledged: a batch started before must still go, not wait for a record that no
    longer comes."""
    async def scenario() -> None:
        stream = FakeStream()
        batches = take_batches(stream, 10, 0.0)
        queue = stream.channel.queue

        async def rebalance() -> None:  # clears the queue once "a" is taken and "b" waits
            while queue.qsize() != 1:
                await asyncio.sleep(0)
            while not queue.empty():
                queue.get_nowait()

        clearing = asyncio.ensure_future(rebalance())
        stream.put("a", "b")
        assert await asyncio.wait_for(batches.__anext__(), 1) == ["a"]
        await clearing
        stream.put("c")  # after the rebalance
        assert await asyncio.wait_for(batches.__anext__(), 1) == ["c"]
        await batches.aclose()
        assert stream.acked == ["a", "c"]

    asyncio.run(scenario())
