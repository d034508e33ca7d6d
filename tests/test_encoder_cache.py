"""CachedEncoder: LRU cache in front of an encoder, tested with a counting fake."""

from __future__ import annotations

import zlib

import numpy as np

from stream_app.encoder import CachedEncoder


class FakeEncoder:
    dim = 4
    version = "fake-1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @staticmethod
    def vector(text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        v = rng.standard_normal(4).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, 4),
                                                                                 np.float32)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def expected(texts):
    return np.stack([FakeEncoder.vector(t) for t in texts])


def test_passes_through_dim_and_version():
    c = CachedEncoder(FakeEncoder(), 10)
    assert c.dim == 4 and c.version == "fake-1"


def test_repeated_texts_cost_no_second_call():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 10)
    out1 = c.encode(["a", "b"])
    out2 = c.encode(["b", "a"])
    assert fake.calls == [["a", "b"]]
    np.testing.assert_array_equal(out1, expected(["a", "b"]))
    np.testing.assert_array_equal(out2, expected(["b", "a"]))
    assert (c.misses, c.hits) == (2, 2)
    c.encode(["a", "c", "b"])
    assert fake.calls == [["a", "b"], ["c"]]
    assert (c.misses, c.hits) == (3, 4)


def test_order_matches_input_including_duplicates():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 10)
    texts = ["x", "y", "x", "z", "y", "x"]
    out = c.encode(texts)
    assert out.shape == (6, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected(texts))
    assert fake.calls == [["x", "y", "z"]]  # each distinct text encoded once, first-seen order
    assert c.misses == 3 and c.hits == 3
    assert c.hits + c.misses == len(texts)


def test_empty_input():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 3)
    out = c.encode([])
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert fake.calls == [] and (c.hits, c.misses) == (0, 0)


def test_lru_eviction_at_size():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 2)
    c.encode(["a"])
    c.encode(["b"])
    c.encode(["a"])          # hit: a is now most recent, b the oldest
    c.encode(["c"])          # evicts b
    assert fake.encoded == ["a", "b", "c"]
    c.encode(["a"])          # still cached
    assert fake.encoded == ["a", "b", "c"]
    c.encode(["b"])          # was evicted: encoded again, evicts c
    assert fake.encoded == ["a", "b", "c", "b"]
    c.encode(["c"])
    assert fake.encoded == ["a", "b", "c", "b", "c"]
    assert (c.hits, c.misses) == (2, 5)


def test_batch_larger_than_cache_still_answers_everything():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 2)
    texts = ["p", "q", "r", "s"]
    np.testing.assert_array_equal(c.encode(texts), expected(texts))
    # only the two most recently used remain
    c.encode(["r", "s"])
    assert fake.calls == [["p", "q", "r", "s"]]
    c.encode(["p"])
    assert fake.calls == [["p", "q", "r", "s"], ["p"]]


def test_returned_array_is_a_copy():
    fake = FakeEncoder()
    c = CachedEncoder(fake, 5)
    out = c.encode(["a"])
    out[:] = 0
    np.testing.assert_array_equal(c.encode(["a"]), expected(["a"]))
