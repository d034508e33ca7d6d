"""Model versions as data: the plain encoder, a trained sequence model, the checkpoint bytes,
and the round rules (when a round starts, what it holds out, what it promotes)."""

from __future__ import annotations

import io
import pickle
from dataclasses import replace

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.model.adapter import Adapter, Blend
from stream_app.model.rounds import RoundPolicy, Standing, promotion, split_holdout
from stream_app.model.sequence import Window, fit_sequence

N, D = 12, 4
IDS = [f"i{n}" for n in range(N)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible fits
HISTORIES = [[0, 1, 2], [5], [], list(range(N)) * 2]  # the last longer than the model reads


def _text(seed: int = 0) -> np.ndarray:
    text = np.random.default_rng(seed).normal(size=(N, D))
    return (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)


def _trained(version: str = "enc+ft00001") -> Adapter:
    """A small sequence model trained a little on a chain through the first ten items."""
    params = replace(Settings().sequence_params(), length=4, dim=8, blocks=1, heads=2,
                     dropout=0.0, lr=1e-2, epochs=5.0, batch_size=4)
    windows = [Window(tuple(range(s, s + 4))) for s in range(7)]
    weights, _ = fit_sequence(None, windows, IDS[:10], _text()[:10], params)
    return Adapter(version, "enc", weights, Blend(1.0, 0.5, 0.25, None))


def test_base_version_ranks_with_the_text_vectors_as_they_are():
    base = Adapter.base("enc")
    text = _text()
    assert base.is_base and base.version == base.base_version == "enc"
    assert base.sequence is None and base.scorer is None
    np.testing.assert_array_equal(base.item_vectors(IDS, text), text)
    assert base.sequence_queries(HISTORIES, text) is None
    assert base.blend == Blend(1.0, None, None, None)  # the settings' weights for the rest
    assert base.meta() == {"version": "enc", "base_version": "enc",
                           "blend": {"sequence": 1.0, "interest": None, "popularity": None,
                                     "covisit": None},
                           "sequence": None, "id_items": 0}
    back = Adapter.from_bytes(base.to_bytes())
    assert back.is_base and (back.version, back.base_version) == ("enc", "enc")


def test_a_trained_version_scores_with_its_own_item_vectors_and_queries():
    a = _trained()
    text = _text()
    assert not a.is_base
    items = a.item_vectors(IDS, text)
    assert items.shape == (N, 8) and np.isfinite(items).all()
    project = a.sequence.arrays["proj.weight"]
    # items 10 and 11 were not in the round's catalog: their text alone
    assert set(a.sequence.item_ids) == set(IDS[:10])
    np.testing.assert_allclose(items[10:], text[10:] @ project.T, rtol=1e-5, atol=1e-6)
    queries = a.sequence_queries(HISTORIES, items)
    assert queries.shape == (len(HISTORIES), 8)
    np.testing.assert_array_equal(queries[2], np.zeros(8))  # no history: no query
    # only the latest ``length`` items are read
    np.testing.assert_allclose(queries[3], a.sequence_queries([HISTORIES[3][-4:]], items)[0],
                               atol=1e-6)
    assert a.meta()["sequence"] == {"length": 4, "dim": 8, "blocks": 1, "heads": 2,
                                    "use_text": True, "use_ids": True}
    assert a.meta()["id_items"] == 10
    b = a.with_blend(Blend(1.0, 0.0, 2.0, 4.0))
    assert b.blend == Blend(1.0, 0.0, 2.0, 4.0) and b.sequence is a.sequence
    assert b.scorer is a.scorer  # built once, shared


def test_checkpoint_round_trips_through_bytes():
    a = _trained()
    b = Adapter.from_bytes(a.to_bytes())
    assert (b.version, b.base_version, b.blend) == (a.version, a.base_version, a.blend)
    assert b.sequence.item_ids == a.sequence.item_ids
    assert b.sequence.shape() == a.sequence.shape()
    assert set(b.sequence.arrays) == set(a.sequence.arrays)
    for name, array in a.sequence.arrays.items():
        np.testing.assert_array_equal(b.sequence.arrays[name], array)  # float32: exact
    np.testing.assert_allclose(b.sequence.id_rows, a.sequence.id_rows, rtol=1e-3,
                               atol=1e-4)  # stored as float16
    text = _text()
    items = a.item_vectors(IDS, text)
    np.testing.assert_allclose(b.item_vectors(IDS, text), items, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(b.sequence_queries(HISTORIES, items),
                                  a.sequence_queries(HISTORIES, items))
    # what the training process receives: the weights, not the built scorer
    assert a.scorer is not None
    c = pickle.loads(pickle.dumps(a))
    assert c._scorer == [] and c.blend == a.blend and c.version == a.version
    np.testing.assert_array_equal(c.sequence_queries(HISTORIES, items),
                                  a.sequence_queries(HISTORIES, items))


@pytest.mark.parametrize("where", ["array", "id_rows"])
def test_a_checkpoint_with_non_finite_weights_is_refused(where):
    a = _trained()
    w = a.sequence
    if where == "array":
        arrays = dict(w.arrays)
        arrays["proj.weight"] = arrays["proj.weight"].copy()
        arrays["proj.weight"][0, 0] = np.nan
        w = replace(w, arrays=arrays)
    else:
        rows = w.id_rows.copy()
        rows[1, 2] = np.inf
        w = replace(w, id_rows=rows)
    blob = Adapter(a.version, a.base_version, w, a.blend).to_bytes()
    with pytest.raises(ValueError, match="non-finite"):
        Adapter.from_bytes(blob)


def test_a_checkpoint_with_an_unknown_array_is_refused():
    blob = _trained().to_bytes()
    with np.load(io.BytesIO(blob)) as z:
        arrays = {name: z[name] for name in z.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays, stray=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="unknown array 'stray'"):
        Adapter.from_bytes(buf.getvalue())


@pytest.mark.parametrize("cut", [10, 0.5, -20])
def test_a_truncated_checkpoint_is_refused_as_a_value_error(cut):
    blob = _trained().to_bytes()
    end = int(len(blob) * cut) if isinstance(cut, float) else cut
    with pytest.raises(ValueError):
        Adapter.from_bytes(blob[:end])


def test_a_misshapen_version_fails_verification():
    a = _trained()
    arrays = dict(a.sequence.arrays)
    arrays["pos.weight"] = arrays["pos.weight"][:2]  # fewer positions than it reads
    broken = Adapter(a.version, a.base_version, replace(a.sequence, arrays=arrays), a.blend)
    with pytest.raises(ValueError, match="does not load"):
        broken.verify()
    a.verify()  # the whole one passes
    Adapter.base("enc").verify()


def test_a_version_that_scores_non_finite_numbers_fails_verification():
    a = _trained()
    arrays = dict(a.sequence.arrays)
    arrays["norm.weight"] = np.full_like(arrays["norm.weight"], 1e38)
    arrays["norm.bias"] = np.full_like(arrays["norm.bias"], 3e38)
    broken = Adapter(a.version, a.base_version, replace(a.sequence, arrays=arrays), a.blend)
    with pytest.raises(ValueError, match="non-finite"):
        broken.verify()


@pytest.mark.parametrize("pending,waited,due", [
    (0, 0.0, False), (0, 999.0, False),  # nothing to train on
    (9, 1.0, False), (10, 0.0, True),  # the batch is full
    (1, 5.0, True), (3, 4.9, False),  # the oldest example waited long enough
])
def test_a_round_starts_on_a_full_batch_or_a_long_wait(pending, waited, due):
    assert RoundPolicy(batch_size=10, max_wait_s=5.0).due(pending, waited) is due


def test_held_out_window_is_the_newest_and_training_never_sees_the_future():
    ts = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0]
    train, held = split_holdout(ts, 0.2, lambda t: t)
    assert held == [9.0, 10.0] and sorted(train) == train and len(train) == 8
    assert max(train) <= min(held)
    assert split_holdout([1.0], 0.2, lambda t: t) == ([1.0], [])
    train, held = split_holdout([1.0, 2.0], 0.01, lambda t: t)
    assert train == [1.0] and held == [2.0]  # at least one of each when there are two


def test_promotion_needs_a_candidate_not_worse_than_current_nor_the_encoder():
    def held(ndcg: float, n: int = 100) -> dict:
        return {"ndcg@10": ndcg, "n": n}

    assert promotion(held(0.05), held(0.04), held(0.03))[0] is True
    assert promotion(held(0.04), held(0.04), held(0.04))[0] is True  # a tie goes forward
    assert promotion(held(0.03), held(0.04), held(0.02)) == (
        False, "held-out NDCG@10 worse than the current version's")
    assert promotion(held(0.05), held(0.04), held(0.06)) == (
        False, "held-out NDCG@10 worse than the plain encoder's")
    assert promotion(held(0.0, n=0), held(0.0, n=0), held(0.0, n=0)) == (
        False, "no held-out examples")


def test_a_revert_needs_the_encoder_ahead_over_the_pooled_windows():
    def standing(*windows: tuple[float, float, int]) -> Standing:
        out = Standing()
        for current, base, n in windows:  # NDCG@10 of the current version, the encoder's
            out.add({"ndcg@10": current, "n": n}, {"ndcg@10": base, "n": n})
        return out

    lost = (0.02, 0.03, 100)  # the encoder alone does better
    assert standing(lost, lost).should_revert(2) is True
    assert standing(lost).should_revert(2) is False  # one window is not enough evidence
    assert standing(lost).should_revert(1) is True
    assert standing(lost, (0.06, 0.03, 100)).should_revert(2) is False  # ahead when pooled
    # pooled by examples: a small window the current wins by far does not outweigh
    assert standing((0.02, 0.03, 400), (0.06, 0.03, 10)).should_revert(2) is True
    assert standing((0.03, 0.03, 100), (0.03, 0.03, 100)).should_revert(2) is False  # a tie
    assert standing((0.0, 0.0, 0), (0.0, 0.0, 0)).should_revert(2) is False
    assert Standing().should_revert(0) is False
