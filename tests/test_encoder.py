"""The real default model (bundled all-MiniLM-L6-v2), loaded offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stream_app.encoder import HFEncoder, default_model_path, model_version


def test_vectors_are_unit_length_and_batch_independent(encoder):
    texts = ["A robot crew explores an alien planet", "short", "A wedding in Paris " * 10]
    batched = encoder.encode(texts)
    assert batched.shape == (3, 384) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_meaning_drives_similarity(encoder):
    pref, scifi, romance = encoder.encode([
        "I like watching movies, especially science fiction",
        "Starship captain battles rogue AI across the galaxy",
        "Two strangers fall in love during a summer wedding"])
    assert pref @ scifi > pref @ romance + 0.1


def test_any_local_model_dir_works_and_version_follows_content(tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(default_model_path(), copy)
    enc = HFEncoder(str(copy), max_seq_length=32, batch_size=2)
    assert enc.version.startswith("my-model-")
    assert enc.version.split("-")[-1] == model_version(default_model_path()).split("-")[-1]
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert model_version(copy) != enc.version


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFEncoder(str(tmp_path))
