"""A trained model version: what the trainer learns on top of the frozen text encoder.

The transformer encoder itself is never changed, so the text vectors ("base space")
are the same for every version, and so is every user's interest state (decayed sums
of base vectors). A version adds a sequence model (``sequence.py``: what users pick
next, from their latest chosen items) and the weights that combine the three parts
of every score (``scoring.py``):

  score(item) = sequence_weight * query . item_vector        (the sequence model)
              + interest_weight * cos(interest, text_vector)  (drift, free text, reasons)
              + covisit_weight * co-visit score               (counted at every event)
              + popularity_weight * log(1 + decayed popularity)

The weights are fitted on held-out choices, not set by hand. The base version is the
encoder as it is: no sequence model, interest weight 1 and the settings' co-visit and
popularity weights (None in its blend).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stream_app.model.sequence import SequenceScorer, SequenceWeights


@dataclass(frozen=True)
class Blend:
    """The weights of a score's parts (None: the settings' weight)."""

    sequence: float = 1.0
    interest: float | None = None
    popularity: float | None = None
    covisit: float | None = None


@dataclass(frozen=True)
class Adapter:
    version: str
    base_version: str  # the encoder whose vectors this version reads
    sequence: SequenceWeights | None = None  # None: the base model
    blend: Blend = Blend()
    _scorer: list = field(default_factory=list, compare=False, repr=False)  # built lazily

    def __reduce__(self):  # pickled (to the training process) without the built scorer
        return (Adapter, (self.version, self.base_version, self.sequence, self.blend))

    @classmethod
    def base(cls, base_version: str) -> "Adapter":
        """The encoder as it is: ranking by plain cosine of text vectors."""
        return cls(version=base_version, base_version=base_version)

    @property
    def is_base(self) -> bool:
        return self.sequence is None

    @property
    def ranks_by_sequence(self) -> bool:
        """Its sequence model enters the score: a trained version whose sequence weight
        is not 0 (serving need not run the model otherwise)."""
        return not self.is_base and self.blend.sequence != 0

    def with_blend(self, blend: Blend) -> "Adapter":
        return Adapter(self.version, self.base_version, self.sequence, blend, self._scorer)

    @property
    def scorer(self) -> SequenceScorer | None:
        if self.sequence is None:
            return None
        if not self._scorer:
            self._scorer.append(SequenceScorer(self.sequence))
        return self._scorer[0]

    def item_vectors(self, item_ids: Sequence[str], text_vectors: np.ndarray) -> np.ndarray:
        """The sequence model's vectors of these items (rows in the same order); the text
        vectors themselves for the base model."""
        if self.scorer is None:
            return np.asarray(text_vectors, dtype=np.float32)
        return self.scorer.item_vectors(item_ids, text_vectors)

    def sequence_queries(self, histories: Sequence[Sequence[int]], items: np.ndarray
                         ) -> np.ndarray | None:
        """(len(histories), dim) queries after each history of rows into ``items`` (this
        version's item vectors), oldest first; None for the base model."""
        if self.scorer is None:
            return None
        return self.scorer.queries(histories, items)

    def meta(self) -> dict[str, Any]:
        return {"version": self.version, "base_version": self.base_version,
                "blend": vars(self.blend),
                "sequence": self.sequence.shape() if self.sequence else None,
                "id_items": len(self.sequence.item_ids) if self.sequence else 0}

    def to_bytes(self) -> bytes:
        """One self-describing blob (npz): written in one SET, so a version appears whole."""
        buf = io.BytesIO()
        arrays: dict[str, np.ndarray] = {}
        if self.sequence is not None:
            arrays = {f"w.{k}": v.astype(np.float32) for k, v in self.sequence.arrays.items()}
            arrays["id_items"] = np.array(self.sequence.item_ids, dtype=str)
            arrays["id_rows"] = self.sequence.id_rows.astype(np.float16)
        meta = json.dumps(self.meta()).encode()
        np.savez(buf, meta=np.frombuffer(meta, dtype=np.uint8), **arrays)
        return buf.getvalue()

    def verify(self) -> None:
        """Raises ``ValueError`` unless this version builds and scores finite numbers on a
        probe (an item of its own, an unknown one, a query after both): a truncated,
        misshapen or diverged version is never promoted or served."""
        if self.sequence is None:
            return
        try:
            probe = np.eye(2, self.sequence.text_dim, dtype=np.float32)
            items = self.item_vectors([*self.sequence.item_ids[:1], "\x00probe"], probe)
            queries = self.sequence_queries([[0, 1]], items)
        except Exception as exc:  # noqa: BLE001 - any failure to build is a broken version
            raise ValueError(f"version {self.version} does not load: {exc!r}") from exc
        if not (np.isfinite(items).all() and np.isfinite(queries).all()):
            raise ValueError(f"version {self.version} scores non-finite numbers")

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Adapter":
        """The version in ``blob``; ``ValueError`` for a blob that is not a whole, finite
        version (truncated, of another format, NaN or inf weights)."""
        try:
            return cls._from_bytes(blob)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - BadZipFile, KeyError, EOFError, ...
            raise ValueError(f"not a model version: {exc!r}") from exc

    @classmethod
    def _from_bytes(cls, blob: bytes) -> "Adapter":
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            shape = meta.get("sequence")
            if not shape:
                return cls.base(meta["base_version"])
            for name in z.files:
                if not name.startswith(("w.", "id_", "meta")):
                    raise ValueError(f"unknown array {name!r} in version {meta['version']}")
            arrays = {name[2:]: z[name].astype(np.float32) for name in z.files
                      if name.startswith("w.")}
            id_rows = z["id_rows"].astype(np.float32)
            weights = SequenceWeights(arrays, tuple(str(i) for i in z["id_items"]),
                                      id_rows.reshape(-1, shape["dim"]), **shape)
            if not all(np.isfinite(v).all() for v in [*arrays.values(), weights.id_rows]):
                raise ValueError(f"version {meta['version']} holds non-finite weights")
            b = meta.get("blend", {})
            return cls(meta["version"], meta["base_version"], weights,
                       Blend(b.get("sequence", 1.0), b.get("interest"),
                             b.get("popularity"), b.get("covisit")))
