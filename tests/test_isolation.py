"""A record that makes processing fail unexpectedly is dead-lettered alone."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stream_app.contract import Record
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
    assert len(out.dead_letters) == 1
    letter = out.dead_letters[0][1]
    assert letter["offset"] == 2 and letter["error"] == "processing failed: KeyError('bug')"
    assert out.counts["dead_letters"] == 1


def test_infrastructure_errors_are_not_dead_lettered():
    async def process(records):
        raise RedisConnectionError("down")

    with pytest.raises(RedisConnectionError):
        asyncio.run(isolate(process, [_rec(1, b"ok")]))
