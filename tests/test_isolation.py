"""A record that makes processing fail unexpectedly is dead-lettered alone; a fault of
the infrastructure is never a record's (``faults``)."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from stream_app.contract import Record
from stream_app.faults import Backoff, EncoderError, infrastructure_cause
from stream_app.pipeline import Outputs, isolate


def _rec(offset: int, value: bytes) -> Record:
    return Record("t", 0, offset, 1.0, b"k", value)


def test_the_culprit_goes_to_dead_letters_and_the_rest_is_processed():
    async def process(records):
        if any(r.value == b"boom" for r in records):
            raise KeyError("bug")
        out = Outputs()
        out.recommendations += [("u", {"offset": r.offset}) for r in records]
        return out

    out = asyncio.run(isolate(process, [_rec(1, b"ok"), _rec(2, b"boom"), _rec(3, b"ok")]))
    assert [v["offset"] for _, v in out.recommendations] == [1, 3]
    (rejected,) = out.rejected
    assert rejected.record.offset == 2 and rejected.reason == "processing_failed"
    letter = rejected.letter(4096)[1]
    assert letter["offset"] == 2 and letter["error"] == "processing failed: KeyError('bug')"
    assert out.counts["dead_letters"] == 1


@pytest.mark.parametrize("error", [
    RedisConnectionError("down"),
    OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    ResponseError("Command # 1 (EVALSHA) of pipeline caused error: OOM command not allowed"),
    ReadOnlyError("You can't write against a read only replica."),
    BusyLoadingError("Redis is loading the dataset in memory"),
    ResponseError("NOSCRIPT No matching script"),
    ProducerSendError("send failed"),
    KafkaTimeoutError(),
    EncoderError("out of memory"),
    asyncio.TimeoutError(),
])
def test_infrastructure_errors_are_never_dead_lettered(error):
    """Whatever the record: the batch fails whole, to be retried."""
    async def process(records):
        if len(records) == 1 and records[0].value == b"ok":
            raise error
        raise KeyError("the batch fails first")

    with pytest.raises(type(error)):
        asyncio.run(isolate(process, [_rec(1, b"bad"), _rec(2, b"ok")]))
    assert infrastructure_cause(error) is not None


@pytest.mark.parametrize("error", [KeyError("bug"), ValueError("bad vector"),
                                   ResponseError("WRONGTYPE Operation against a key")])
def test_a_records_own_failure_is_not_infrastructure(error):
    assert infrastructure_cause(error) is None


def test_backoff_grows_jittered_up_to_its_cap():
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (60, 2.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # spread, not in lockstep
