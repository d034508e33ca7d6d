"""Decayed item popularity: the pure model and the Redis script agree."""

from __future__ import annotations

import asyncio
import math
import uuid

import numpy as np
import pytest

from stream_app.model.popularity import Popularity, decayed_add
from stream_app.store import Store, connect

HL = 100.0


def test_decayed_add_in_and_out_of_order():
    assert decayed_add(0.0, 0.0, 1.0, 50.0, HL) == (1.0, 50.0)
    value, ts = decayed_add(2.0, 0.0, 1.0, HL, HL)  # halves, then adds
    assert (value, ts) == (pytest.approx(2.0), HL)
    value, ts = decayed_add(1.0, HL, 1.0, 0.0, HL)  # older event: its own decay
    assert (value, ts) == (pytest.approx(1.5), HL)


def test_prior_is_log1p_of_the_count_decayed_to_query_time():
    pop = Popularity(HL)
    pop.add([("a", 1.0, 0.0), ("a", 1.0, 0.0), ("b", 1.0, HL)])
    prior = pop.prior(["a", "b", "unknown"], at=HL)
    np.testing.assert_allclose(prior, [math.log1p(1.0), math.log1p(1.0), 0.0], rtol=1e-6)
    assert Popularity(math.inf).prior(["x"], 1e9)[0] == 0.0


@pytest.mark.integration
def test_redis_script_matches_the_pure_model(redis_url):
    increments = [("a", 1.0, 100.0), ("a", 1.0, 300.0), ("b", 1.0, 50.0), ("a", 1.0, 200.0),
                  ("b", 2.0, 50.0)]

    async def go():
        store = Store(connect(redis_url), f"satest-pop-{uuid.uuid4().hex[:6]}")
        try:
            await store.add_popularity(increments[:2], HL)
            await store.add_popularity(increments[2:], HL)
            return await store.popularity()
        finally:
            await store.delete_prefix()
            await store.r.aclose()

    pure = Popularity(HL)
    pure.add(increments)
    stored = asyncio.run(go())
    assert stored.keys() == pure.entries.keys()
    for item, (value, ts) in pure.entries.items():
        assert stored[item] == (pytest.approx(value, rel=1e-12), ts)
