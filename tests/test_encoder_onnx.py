"""The ONNX Runtime encoder backends (``encoder_backend`` = onnx, onnx-int8) against torch."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

from stream_app import encoder as enc_mod
from stream_app.config import Settings
from stream_app.encoder import (HFEncoder, OnnxEncoder, encoder_version, import_onnxruntime,
                                make_encoder)
from stream_app.evaluation.commands import eval_encoder
from tests.harness import run_python



def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


needs_ort = pytest.mark.skipif(
    not _has_onnxruntime(), reason="onnxruntime is not installed (pip install 'stream-app[onnx]')")

TEXTS = [
    "A robot crew explores an alien planet", "short", "x", "",
    "I like watching movies, especially science fiction",
    "Starship captain battles rogue AI across the galaxy",
    "Two strangers fall in love during a summer wedding",
    "Toy Story (1995). A adventure, animation, children, comedy, fantasy movie from 1995.",
    "Heat (1995)", "Cider House Rules, The (1999)", "horror", "war", "funny dark comedy",
    "something cozy for a rainy sunday with the kids, nothing too scary please",
    "movies similar to Alien but more romantic", "best westerns of the 1960s",
    "A detective hunts a serial killer through a city that never sleeps " * 12,
    "Ünïcödé, émojis 🎬 and CJK 映画", "1997 2001 42 007",
    "documentary about deep sea creatures and the people who film them",
    "my kids want feel-good animation with talking animals",
    "a heist in Berlin, spies, double crosses and a jazz soundtrack",
    "The Chronos Ledger. A physicist discovers her time machine works. sci-fi time-travel",
    "Letters to Lisbon. A romance told in letters between two cities. romance drama",
] + [f"{g} movies about {t}" for g in ("sad", "epic", "weird")
     for t in ("dragons", "hackers", "a road trip")]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx_encoder(onnx_cache):
    return OnnxEncoder(batch_size=8, cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def int8_encoder(onnx_cache, onnx_encoder):
    return OnnxEncoder(batch_size=8, quantized=True, cache_dir=onnx_cache)


@pytest.fixture
def cache_env(onnx_cache, monkeypatch):
    """make_encoder's default cache directory: the session's, not ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(onnx_cache.parent / "xdg"))
    target = onnx_cache.parent / "xdg" / "stream-app" / "onnx"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(onnx_cache)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@needs_ort
def test_export_is_cached_under_the_model_version(onnx_encoder, onnx_cache, monkeypatch):
    version = enc_mod.model_version(enc_mod.default_model_path())
    assert onnx_encoder.file == onnx_cache / version / f"model-{enc_mod.ONNX_EXPORT_FORMAT}.onnx"
    assert onnx_encoder.file.stat().st_size > 1_000_000
    assert not list(onnx_encoder.file.parent.glob("*.tmp"))

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(enc_mod, "export_onnx", no_export)
    again = OnnxEncoder(cache_dir=onnx_cache)
    assert again.file == onnx_encoder.file


@needs_ort
def test_onnx_vectors_are_torch_vectors_and_keep_its_version(onnx_encoder, encoder):
    got, want = onnx_encoder.encode(TEXTS), encoder.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosine(got, want).min() >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert onnx_encoder.dim == encoder.dim and onnx_encoder.version == encoder.version


def test_the_fast_tokenizer_gives_transformers_ids():
    """TextTokenizer (tokenizers alone) against AutoTokenizer, as the torch encoder calls
    it: the same arrays, padded to the batch's longest and truncated at the limit."""
    from transformers import AutoTokenizer

    from stream_app.encoder import TextTokenizer

    path = enc_mod.default_model_path()
    hf = AutoTokenizer.from_pretrained(str(path))
    for limit in (128, 16):
        ours = TextTokenizer(path, limit)
        for batch in (TEXTS, TEXTS[:3], ["x"], [""]):
            want = hf(batch, padding=True, truncation=True, max_length=limit,
                      return_tensors="np")
            got = ours(batch)
            assert set(got) == {"input_ids", "attention_mask", "token_type_ids"}
            for name in got:
                assert got[name].dtype == np.int64
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert ours(TEXTS)["input_ids"].shape[1] == limit  # the long text is cut


@needs_ort
def test_an_onnx_encoder_loads_neither_torch_nor_transformers(onnx_encoder, onnx_cache):
    """transformers imports torch wherever it is installed (~300 MB of a worker); the ONNX
    backend needs neither once its export is cached."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from stream_app.encoder import OnnxEncoder\n"
            f"enc = OnnxEncoder(cache_dir=Path({str(onnx_cache)!r}))\n"
            "print(enc.encode(['a robot crew explores an alien planet']).shape,\n"
            "      sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(1, 384) []", done.stdout


@needs_ort
def test_int8_vectors_are_close_and_get_their_own_version(int8_encoder, encoder):
    cosine = _cosine(int8_encoder.encode(TEXTS), encoder.encode(TEXTS))
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())
    assert int8_encoder.version == encoder.version + "-int8"
    assert "int8" in int8_encoder.file.name


@needs_ort
@pytest.mark.parametrize("which", ["onnx_encoder", "int8_encoder"])
def test_batched_and_one_by_one_agree(which, request):
    enc = request.getfixturevalue(which)
    batched = enc.encode(TEXTS)  # batches of 8, sorted by length, put back in order
    single = np.concatenate([enc.encode([t]) for t in TEXTS])
    if which == "onnx_encoder":
        np.testing.assert_allclose(batched, single, atol=1e-5)
    else:  # int8 activations are quantized per batch (padding included): close, not
        # equal, as close as int8 is to torch's vectors; the tiniest texts ("", "x")
        # move most (min 0.971 with onnxruntime 1.32, 0.98+ before)
        cosine = _cosine(batched, single)
        assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())
    assert enc.encode([]).shape == (0, 384)


@needs_ort
def test_the_setting_selects_the_backend(cache_env, encoder):
    for backend, kind in (("onnx", OnnxEncoder), ("onnx-int8", OnnxEncoder),
                          ("torch", HFEncoder)):
        threads = "0" if backend == "torch" else "1"  # torch's would be process-wide
        s = Settings.from_env({"STREAM_APP_ENCODER_BACKEND": backend,
                               "STREAM_APP_ENCODE_BATCH_SIZE": "16",
                               "STREAM_APP_TORCH_THREADS": threads})
        built = make_encoder(s)
        assert isinstance(built, kind) and built.batch_size == 16
        assert built.version == encoder_version(s)
        if kind is OnnxEncoder:
            assert built.session.get_session_options().intra_op_num_threads == 1
        evaluated = eval_encoder(s)  # `stream-app eval` ranks with the worker's encoder
        assert isinstance(evaluated.encoder, kind) and evaluated.version == built.version
    assert encoder_version(Settings()) == encoder.version  # torch, the default


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="STREAM_APP_ENCODER_BACKEND"):
        Settings.from_env({"STREAM_APP_ENCODER_BACKEND": "tensorrt"})


def test_onnx_without_the_extra_is_one_clear_line(monkeypatch):
    from stream_app.cli import explain

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if absent
    with pytest.raises(ModuleNotFoundError) as caught:
        OnnxEncoder()
    message = explain(caught.value)
    assert message is not None and "\n" not in message
    assert "stream-app[onnx]" in message and "STREAM_APP_ENCODER_BACKEND" in message
    with pytest.raises(ModuleNotFoundError, match=r"onnx-int8 needs onnxruntime"):
        import_onnxruntime("onnx-int8")


@needs_ort
def test_bench_measures_each_backend(cache_env):
    from stream_app.bench_encoder import bench_texts, measure
    from stream_app.cli import build_parser

    assert build_parser().parse_args(["bench", "--encoder"]).encoder is True
    kinds = bench_texts(60)
    assert kinds["queries"] and kinds["catalog"]
    texts = [t for group in kinds.values() for t in group][:24]
    figures = measure(("torch", "onnx"), texts, Settings(), rounds=1, one_by_one=4,
                      log=lambda *a: None)
    onnx = figures["backends"]["onnx"]
    assert onnx["batched_texts_per_s"] > 0 and onnx["one_by_one_texts_per_s"] > 0
    assert onnx["cosine_to_torch"]["min"] >= 0.9999
    assert figures["backends"]["torch"]["batched_vs_torch"] == 1.0


def test_bench_encoder_option_dispatches(monkeypatch):
    from stream_app import bench_encoder, cli

    seen = {}
    monkeypatch.setattr(bench_encoder, "run_encoder_bench",
                        lambda s, args: seen.setdefault("args", args) and 0)
    assert cli.main(["bench", "--encoder", "--text-events", "10"]) == 0
    assert isinstance(seen["args"], argparse.Namespace) and seen["args"].text_events == 10
