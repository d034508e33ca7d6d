"""The registry never stores, promotes or serves a broken version (Redis)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import numpy as np
import pytest

from stream_app.catalog import Catalog
from stream_app.config import Settings
from stream_app.model.adapter import Adapter
from stream_app.store import Store, connect
from stream_app.versions import Registry, follow
from tests.test_adapter import IDS, _text, _trained


@pytest.fixture
def run(redis_url):
    """Runs ``test(registry, client, prefix)`` in a loop of its own; keys removed after."""
    prefix = f"satest-versions-{uuid.uuid4().hex[:8]}"

    def go(test):
        async def inside():
            client = connect(redis_url)
            try:
                await test(Registry(client, prefix, "enc"), client, prefix)
            finally:
                await Store(client, prefix).delete_prefix()
                await client.aclose()
        asyncio.run(inside())
    return go


def test_a_broken_version_is_neither_promoted_nor_followed(run):
    async def go(reg, client, prefix):
        good = _trained("enc+ft00001")
        await reg.save(good, {"created_at": 1.0})
        await reg.promote(good.version, "test")
        broken = _trained("enc+ft00002")
        await reg.save(broken, {"created_at": 2.0})
        blob = await client.get(reg._blob + broken.version)
        await client.set(reg._blob + broken.version, blob[: len(blob) // 2])  # truncated
        with pytest.raises(ValueError):
            await reg.promote(broken.version, "test")
        assert await reg.current() == good.version

        # pushed past the check (as a bad actor or an old release could): never served
        await client.set(reg._current, broken.version)
        store = Store(client, prefix)
        catalog = Catalog.for_settings(store, "enc", 4, Settings())
        catalog.upsert(zip(IDS, _text()))
        await catalog.use(good)
        with pytest.raises(ValueError):
            await follow(catalog, reg)
        assert catalog.adapter.version == good.version

    run(go)


def test_a_version_with_nan_weights_is_never_stored(run):
    a = _trained("enc+ft00003")
    arrays = dict(a.sequence.arrays)
    arrays["proj.weight"] = np.full_like(arrays["proj.weight"], np.nan)
    nan = Adapter(a.version, "enc", replace(a.sequence, arrays=arrays), a.blend)

    async def go(reg, client, prefix):
        with pytest.raises(ValueError, match="non-finite"):
            await reg.save(nan, {"created_at": 1.0})
        assert await reg.versions() == []

    run(go)
