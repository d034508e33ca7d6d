"""Model versions as data: the identity base, the maps and residuals, the checkpoint bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stream_app.model.adapter import Adapter, normalize_rows
from stream_app.model.rounds import RoundPolicy, Standing, promotion, split_holdout


def _adapter(d: int = 4) -> Adapter:
    rng = np.random.default_rng(1)
    return Adapter("enc+ft00001", "enc", query=rng.normal(size=(d, d)).astype(np.float32),
                   item=rng.normal(size=(d, d)).astype(np.float32), residual_ids=("b",),
                   residual=np.full((1, d), 0.5, np.float32))


def test_base_version_ranks_with_the_text_vectors_as_they_are():
    base = Adapter.base("enc")
    text = normalize_rows(np.arange(8, dtype=np.float32).reshape(2, 4) + 1)
    assert base.is_base and base.version == base.base_version == "enc"
    np.testing.assert_array_equal(base.item_vectors(["a", "b"], text), text)
    np.testing.assert_array_equal(base.queries(text), text)


def test_items_without_residual_start_from_their_mapped_text():
    a = _adapter()
    text = normalize_rows(np.eye(4, dtype=np.float32)[:2] + 0.1)
    vecs = a.item_vectors(["a", "b"], text)
    np.testing.assert_allclose(vecs[0], normalize_rows(text[:1] @ a.item.T)[0], atol=1e-6)
    np.testing.assert_allclose(vecs[1], normalize_rows(text[1:] @ a.item.T + 0.5)[0],
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a.queries(text), normalize_rows(text @ a.query.T), atol=1e-6)


def test_sequence_query_weighs_newer_items_more_and_adds_their_context():
    text = {"a": np.array([1, 0, 0, 0], np.float32), "b": np.array([0, 1, 0, 0], np.float32)}
    assert Adapter.base("enc").sequence_queries([["a"]], text.get) is None
    a = replace(_adapter(), context_ids=("b",), context=np.array([[0, 0, 1, 0]], np.float32),
                sequence_scale=2.0, sequence_decay=0.5)
    q = a.sequence_queries([["b", "a"], ["a", "gone"], []], text.get)
    np.testing.assert_allclose(q[0], 2.0 * normalize_rows(np.array([[1, 0.5, 0.5, 0]]))[0],
                               atol=1e-6)  # "a" newest (weight 1), "b" + its context (0.5)
    np.testing.assert_allclose(q[1], [2.0, 0, 0, 0], atol=1e-6)  # a deleted item is left out
    np.testing.assert_array_equal(q[2], np.zeros(4))


def test_checkpoint_round_trips_through_bytes():
    a = replace(_adapter(), context_ids=("a", "b"), context=np.ones((2, 4), np.float32),
                sequence_scale=3.0, sequence_decay=0.7)
    b = Adapter.from_bytes(a.to_bytes())
    assert (b.context_ids, b.sequence_scale, b.sequence_decay) == (("a", "b"), 3.0, 0.7)
    np.testing.assert_allclose(b.context, a.context, atol=1e-3)
    assert (b.version, b.base_version, b.residual_ids) == (a.version, a.base_version, ("b",))
    np.testing.assert_array_equal(b.query, a.query)
    np.testing.assert_array_equal(b.item, a.item)
    np.testing.assert_allclose(b.residual, a.residual, atol=1e-3)  # stored as float16
    base = Adapter.from_bytes(Adapter.base("enc").to_bytes())
    assert base.is_base and base.version == "enc"


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
