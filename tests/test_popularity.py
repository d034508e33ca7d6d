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


def test_a_catalogs_prior_rows_follow_counts_and_catalog_changes_exactly():
    """``PriorRows`` reads only the rows whose item or count changed since its last call;
    after any mix of counts added, log updates, whole-hash replaces, items added,
    re-written and removed (a removed row takes the last item), its prior is the full
    read's to the bit."""
    import random

    from stream_app.catalog import PriorRows
    from stream_app.index import CatalogIndex
    from stream_app.model.popularity import Popularity

    rnd = random.Random(5)
    index = CatalogIndex(2)
    pop = Popularity(3600.0)
    rows = PriorRows(index, pop)
    names = [f"i{n}" for n in range(40)]
    index.upsert((n, np.ones(2, np.float32)) for n in names[:20])
    at = 1000.0
    for step in range(400):
        at += rnd.random() * 50
        op = rnd.random()
        if op < 0.4:
            pop.add([(rnd.choice(names), rnd.random() * 2, at - rnd.random() * 100)
                     for _ in range(rnd.randrange(1, 6))])
        elif op < 0.55:
            pop.update([(rnd.choice(names), None if rnd.random() < 0.3 else
                         (rnd.random() * 9, at - rnd.random() * 500))])
        elif op < 0.6:
            pop.replace({n: (rnd.random() * 5, at) for n in rnd.sample(names, 10)})
        elif op < 0.75:
            index.upsert([(rnd.choice(names), np.ones(2, np.float32))])
        elif op < 0.85:
            index.remove(rnd.sample(names, rnd.randrange(1, 3)))
        if rnd.random() < 0.6:
            assert np.array_equal(rows.prior(at), pop.prior(index.ids, at)), step
    # the catalog alone changes, at the same size: one item out, its row taken by the
    # last, another in (no count changed: only the rows the catalog wrote say so)
    pop.replace({n: (float(k + 1), at) for k, n in enumerate(names)})
    rows.prior(at)
    out, into = index.ids[0], next(n for n in names if n not in index)
    index.remove([out])
    index.upsert([(into, np.ones(2, np.float32))])
    assert np.array_equal(rows.prior(at), pop.prior(index.ids, at))
