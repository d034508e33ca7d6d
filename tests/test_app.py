"""``app.take_batches``, ``app.Handover`` and ``app.run_batches`` without a broker: what a
batch holds, when it is acknowledged or withheld, what it sends when, retries and
isolation (the Kafka-tier tests run the same code under a real Faust worker)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stream_app.app import Handover, run_batches, take_batches
from stream_app.config import Settings
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


class _Message:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "activity", 0, offset
        self.timestamp, self.key, self.value = 1.0, b"u", b"record %d" % offset
        self.acked = False


class _Event:
    def __init__(self, offset: int) -> None:
        self.message = _Message(offset)


class _Runtime:
    """What ``run_batches`` asks of a worker's runtime, recorded."""

    health = None
    stopping = False

    def __init__(self) -> None:
        self.retries: list[str] = []
        self.published: list[int] = []

    async def ready(self) -> None:
        return None

    def on_retry(self, topic: str, cause: str, error: str) -> None:
        self.retries.append(cause)

    def on_progress(self, topic, records) -> None:
        return None

    async def publish(self, topic, out, batch_records, seconds) -> None:
        self.published.append(batch_records)


def _loop(process, producer: _Producer):
    """``run_batches`` over a fake stream, sending to ``producer``; (stream, runtime,
    task)."""
    topic = _Topic(producer)
    stream, runtime = FakeStream(), _Runtime()
    settings = Settings.from_env({}).replace(retry_base_s=0.001, retry_max_s=0.002,
                                             batch_size=10, batch_within_s=0.0)
    task = asyncio.ensure_future(run_batches(
        stream, settings, runtime, "activity", process,
        lambda out: [(topic, None, b"dead " + r.record.value) for r in out.rejected]
        + [(topic, None, value) for _, value in out.recommendations]))
    return stream, runtime, task


async def _until(check, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached in time")


def test_a_batch_retried_after_an_infrastructure_fault_sends_its_lists_and_is_acknowledged():
    async def scenario() -> None:
        producer, calls = _Producer(), []

        async def process(records, early):
            calls.append(len(records))
            out = Outputs(recommendations=[("u", b"list " + r.value) for r in records])
            await early(out)  # the lists leave before the counts
            if len(calls) == 1:
                raise RedisConnectionError("counting failed")  # after the lists left
            return out

        stream, runtime, task = _loop(process, producer)
        stream.put(_Event(0), _Event(1))
        await _until(lambda: runtime.published)
        assert calls == [2, 2] and runtime.retries == ["redis_connection"]
        # the failed attempt's lists went too: at least once
        assert producer.sent == [b"list record 0", b"list record 1"] * 2
        # acknowledged once done (when the loop asks for the next batch)
        await _until(lambda: [e.message.offset for e in stream.acked] == [0, 1])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_bug_isolates_the_bad_record_and_a_cancelled_batch_is_withheld():
    async def scenario() -> None:
        producer, stop, reached = _Producer(), asyncio.Event(), asyncio.Event()

        async def process(records, early):
            if any(r.offset == 1 for r in records):
                raise ValueError("a bad record")  # alone too: to dead letters
            if any(r.offset == 2 for r in records):
                reached.set()
                await stop.wait()  # still processing when the worker stops
            out = Outputs(recommendations=[("u", b"list " + r.value) for r in records])
            if early is not None:
                await early(out)
            return out

        stream, runtime, task = _loop(process, producer)
        stream.put(_Event(0), _Event(1))
        await _until(lambda: runtime.published)
        assert sorted(producer.sent) == [b"dead record 1", b"list record 0"]
        await _until(lambda: [e.message.offset for e in stream.acked] == [0, 1])
        last = _Event(2)
        stream.put(last)
        await asyncio.wait_for(reached.wait(), 2)
        task.cancel()  # shutdown while offset 2 is in process
        await asyncio.gather(task, return_exceptions=True)
        # marked as acknowledged before Faust's own acknowledgement could commit it: the
        # next owner of the partition processes it again
        assert last.message.acked and len(runtime.published) == 1
        assert len(producer.sent) == 2  # nothing of it was sent

    asyncio.run(scenario())
