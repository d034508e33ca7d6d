"""Shared fakes: stand-ins for what a test does not exercise (never for Kafka or Redis)."""

from __future__ import annotations

import hashlib

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
