"""``app.take_batches`` and ``app.Handover`` without a broker: what a batch holds, when it
is acknowledged, what it sends when (the Kafka-tier tests run the same code under a real
Faust worker)."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.app import Handover, take_batches
from stream_app.contract import Record
from stream_app.pipeline import Outputs, Rejected
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


class _Producer:
    """What ``app.Handover`` uses of Faust's producer: ``send`` answers a future the test
    settles (``fail``: the broker refuses the records whose value says so)."""

    def __init__(self, fail: bytes = b"") -> None:
        self.sent: list[bytes] = []
        self.fail = fail

    async def send(self, topic, key, value, *_):
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()
        if self.fail and self.fail in value:
            future.set_exception(RuntimeError("refused"))
        else:
            future.set_result(None)
        return future


class _Topic:
    """A topic and its app, as far as ``app.Handover`` goes."""

    def __init__(self, producer: _Producer) -> None:
        self.app, self.producer = self, producer

    async def maybe_start_producer(self) -> _Producer:
        return self.producer

    def get_topic_name(self) -> str:
        return "out"


def _handover(producer: _Producer) -> Handover:
    topic = _Topic(producer)
    return Handover(lambda out: [(topic, None, f"dead {r.error}".encode()) for r in out.rejected]
                    + [(topic, None, value) for _, value in out.recommendations])


def test_recommendations_handed_over_early_go_once_and_dead_letters_at_the_end() -> None:
    async def scenario() -> None:
        producer = _Producer()
        handover = _handover(producer)
        out = Outputs(recommendations=[("u", b"r1"), ("v", b"r2")])
        await handover.early(out)
        assert producer.sent == [b"r1", b"r2"]  # sent before the batch is finished
        out.recommendations.append(("w", b"r3"))
        out.rejected.append(Rejected(Record("t", 0, 0, 0.0, None, b"x"), "bad", "bad"))
        await handover.finish(out)
        assert producer.sent == [b"r1", b"r2", b"dead bad", b"r3"]  # each record once
        assert handover.pending == []

    asyncio.run(scenario())


def test_a_refused_record_fails_the_batch_and_an_abandoned_attempt_is_not_waited_for() -> None:
    async def scenario() -> None:
        producer = _Producer(fail=b"r2")
        handover = _handover(producer)
        out = Outputs(recommendations=[("u", b"r1"), ("v", b"r2")])
        await handover.early(out)
        with pytest.raises(RuntimeError, match="refused"):
            await handover.finish(out)  # the batch is retried, not acknowledged
        again = _handover(producer)
        await again.early(out)
        again.abandon()  # a count failed: the retry sends them again
        assert again.pending == [] and producer.sent == [b"r1", b"r2"] * 2

    asyncio.run(scenario())


def test_a_bug_in_making_the_early_messages_is_raised_at_the_end_not_isolated() -> None:
    """Raised by ``finish`` (the worker stops on a bug, as when everything was sent at the
    end), not by ``early`` inside the batch's processing, where it would pass for a bad
    record after the batch's states were written."""
    async def scenario() -> None:
        producer = _Producer()
        topic = _Topic(producer)

        def messages(out):
            if out.recommendations:
                raise ValueError("cannot serialise")
            return [(topic, None, b"dead")]

        handover = Handover(messages)
        out = Outputs(recommendations=[("u", b"r1")])
        await handover.early(out)  # the batch goes on to its counts
        with pytest.raises(ValueError, match="serialise"):
            await handover.finish(out)
        assert producer.sent == []

    asyncio.run(scenario())
