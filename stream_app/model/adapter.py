"""A fine-tuned model version: what the trainer learns on top of the frozen text encoder.

The transformer itself is never changed, so the text vectors ("base space") are the
same for every version, and so is every user's interest state (decayed sums of base
vectors). A version only changes how those are compared:

  query    = scale * normalize(Q @ interest_direction)
  item     = normalize(P @ text_vector + residual[item_id])
  sequence = sequence_scale * normalize(sum_a decay^a * (text_vector + context[item_id]))

Q and P are d x d maps (identity at the start), the residuals are per-item
corrections learned from feedback (zero at the start, so a new item starts from its
text), and ``scale`` weighs similarity against the popularity prior the ranking adds.
``sequence`` reads the user's latest chosen items (newest first, a = 0, 1, ...):
its per-item ``context`` embeddings learn which items lead to which (what people
pick next), which text similarity alone cannot know; every score adds its cosine
with the item. The base version is the identity: no Q, no P, no residuals, scale 1,
and no sequence term.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


def normalize_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Adapter:
    version: str
    base_version: str  # the encoder whose vectors this version maps
    query: np.ndarray | None = None  # (d, d); None: the identity (base model)
    item: np.ndarray | None = None  # (d, d)
    residual_ids: tuple[str, ...] = ()
    residual: np.ndarray | None = None  # (len(residual_ids), d)
    scale: float = 1.0
    context_ids: tuple[str, ...] = ()
    context: np.ndarray | None = None  # (len(context_ids), d)
    sequence_scale: float = 0.0  # 0: no sequence term
    sequence_decay: float = 1.0
    _rows: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _context_rows: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._rows.update((item_id, n) for n, item_id in enumerate(self.residual_ids))
        self._context_rows.update((item_id, n) for n, item_id in enumerate(self.context_ids))

    @classmethod
    def base(cls, base_version: str) -> "Adapter":
        """The encoder as it is: ranking by plain cosine of text vectors."""
        return cls(version=base_version, base_version=base_version)

    @property
    def is_base(self) -> bool:
        return self.query is None

    def item_vectors(self, item_ids: Sequence[str], text_vectors: np.ndarray) -> np.ndarray:
        """Ranking vectors of these items from their text vectors (rows in the same order)."""
        if self.is_base:
            return np.asarray(text_vectors, dtype=np.float32)
        out = np.asarray(text_vectors, dtype=np.float32) @ self.item.T
        for n, item_id in enumerate(item_ids):
            row = self._rows.get(item_id)
            if row is not None:
                out[n] += self.residual[row]
        return normalize_rows(out)

    def queries(self, directions: np.ndarray) -> np.ndarray:
        """Ranking vectors of interest directions (base space)."""
        if self.is_base or len(directions) == 0:
            return np.asarray(directions, dtype=np.float32)
        return self.scale * normalize_rows(np.asarray(directions, dtype=np.float32) @ self.query.T)

    def sequence_queries(self, histories: Sequence[Sequence[str]],
                         text_of: Callable[[str], np.ndarray | None]) -> np.ndarray | None:
        """Ranking vectors of recent-item sequences (oldest first), one row per sequence;
        None when this version has no sequence term. Items without a text vector are
        left out (deleted from the catalog since)."""
        if self.sequence_scale <= 0 or self.query is None:
            return None
        out = np.zeros((len(histories), self.query.shape[0]), np.float32)
        for n, items in enumerate(histories):
            for age, item_id in enumerate(reversed(items)):
                vec = text_of(item_id)
                if vec is None:
                    continue
                row = self._context_rows.get(item_id)
                out[n] += self.sequence_decay ** age * (vec if row is None
                                                        else vec + self.context[row])
        return self.sequence_scale * normalize_rows(out)

    def to_bytes(self) -> bytes:
        """One self-describing blob (npz): written in one SET, so a version appears whole."""
        buf = io.BytesIO()
        d = 0 if self.query is None else self.query.shape[0]
        np.savez(buf, meta=np.frombuffer(json.dumps(
                     {"version": self.version, "base_version": self.base_version,
                      "scale": self.scale, "sequence_scale": self.sequence_scale,
                      "sequence_decay": self.sequence_decay}).encode(),
                     dtype=np.uint8),
                 query=self.query if self.query is not None else np.zeros((0, 0), np.float32),
                 item=self.item if self.item is not None else np.zeros((0, 0), np.float32),
                 residual_ids=np.array(self.residual_ids, dtype=str),
                 residual=(self.residual if self.residual is not None
                           else np.zeros((0, d), np.float32)).astype(np.float16),
                 context_ids=np.array(self.context_ids, dtype=str),
                 context=(self.context if self.context is not None
                          else np.zeros((0, d), np.float32)).astype(np.float16))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Adapter":
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            query = z["query"].astype(np.float32)
            if query.size == 0:
                return cls.base(meta["base_version"])
            return cls(version=meta["version"], base_version=meta["base_version"],
                       query=query, item=z["item"].astype(np.float32),
                       residual_ids=tuple(str(i) for i in z["residual_ids"]),
                       residual=z["residual"].astype(np.float32),
                       scale=float(meta.get("scale", 1.0)),
                       context_ids=tuple(str(i) for i in z["context_ids"])
                       if "context_ids" in z.files else (),
                       context=z["context"].astype(np.float32) if "context" in z.files
                       else None,
                       sequence_scale=float(meta.get("sequence_scale", 0.0)),
                       sequence_decay=float(meta.get("sequence_decay", 1.0)))
