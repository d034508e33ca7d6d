"""The training objective on a problem the text alone cannot solve."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stream_app.model.adapter import Adapter, normalize_rows
from stream_app.model.objective import Example, FitParams, ItemTable, fit, score

N, D = 60, 8


def _world(seed: int = 0) -> tuple[ItemTable, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = normalize_rows(rng.normal(size=(N, D)))
    return ItemTable([f"i{n}" for n in range(N)], text, np.zeros(N, np.float32)), \
        rng.permutation(N)


def _examples(table: ItemTable, follows: np.ndarray, n: int, seed: int,
              skips: np.ndarray | None = None) -> list[Example]:
    """Whoever liked item i chooses item follows[i] next (and skipped skips[i] first)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        i = int(rng.integers(N))
        neg = (f"i{skips[i]}",) if skips is not None else ()
        out.append(Example(float(k), f"u{k}", table.text[i:i + 1].astype(np.float16),
                           np.ones(1, np.float32), f"i{follows[i]}", neg, frozenset({f"i{i}"})))
    return out


PARAMS = FitParams(epochs=8, batch_size=64, lr=0.02, residual_lr=0.05, temperature=0.1,
                   sampled_negatives=16, popularity_weight=0.0)


def test_fitting_learns_what_users_choose_for_their_interests():
    table, follows = _world()
    base = Adapter.base("enc")
    trained, metrics = fit(base, _examples(table, follows, 3000, 1), table, PARAMS, "enc+ft1")
    held = _examples(table, follows, 500, 2)
    before, after = score(base, held, table, 0.0), score(trained, held, table, 0.0)
    assert metrics["examples"] == 3000 and metrics["steps"] > 0
    assert trained.version == "enc+ft1" and trained.base_version == "enc"
    assert before["hr@10"] < 0.3 < 0.8 < after["hr@10"]
    assert after["ndcg@10"] > 2 * before["ndcg@10"]


def test_skips_are_pushed_down_as_hard_negatives():
    """Users choose the text's nearest neighbour and skip the second nearest: only the
    skips say that the second one is unwanted."""
    table, _ = _world()
    order = np.argsort(-(table.text @ table.text.T), axis=1)  # column 0: the item itself
    nearest, second = order[:, 1], order[:, 2]
    base = Adapter.base("enc")
    few = replace(PARAMS, batch_size=4, sampled_negatives=1, epochs=2)  # rarely sampled
    plain, _ = fit(base, _examples(table, nearest, 2000, 1), table, few, "a")
    hard, _ = fit(base, _examples(table, nearest, 2000, 1, skips=second), table, few, "b")
    held = _examples(table, nearest, 300, 2)

    def mean_rank_of_skipped(a: Adapter) -> float:
        """Items ranked above the one these users skip (higher: the skip was heard)."""
        vecs = a.item_vectors(table.ids, table.text)
        ranks = []
        for e in held:
            skipped = second[int(next(iter(e.seen))[1:])]
            q = a.queries(np.asarray(e.interests, np.float32))[0]
            ranks.append(int((vecs @ q > vecs[skipped] @ q).sum()))
        return float(np.mean(ranks))

    assert mean_rank_of_skipped(hard) > mean_rank_of_skipped(plain) + 2
    assert score(hard, held, table, 0.0)["hr@10"] > 0.9  # the choice itself still on top


def test_context_embeddings_learn_what_follows_an_item():
    """Users with no interest state choose follows[last item]: only the sequence term,
    through the per-item context embeddings, can learn it."""
    table, follows = _world()
    rng = np.random.default_rng(3)

    def examples(n: int) -> list[Example]:
        out = []
        for k in range(n):
            i = int(rng.integers(N))
            out.append(Example(float(k), f"u{k}", np.zeros((0, D), np.float16),
                               np.zeros(0, np.float32), f"i{follows[i]}", (),
                               frozenset({f"i{i}"}), recent=(f"i{i}",)))
        return out

    base = Adapter.base("enc")
    trained, metrics = fit(base, examples(3000), table, PARAMS, "enc+ft3")
    held = examples(300)
    assert metrics["examples"] == 3000
    assert trained.sequence_scale > 0 and len(trained.context_ids) > N // 2
    assert score(base, held, table, 0.0)["hr@10"] < 0.3 < 0.8 < score(trained, held, table,
                                                                       0.0)["hr@10"]


def test_nothing_usable_leaves_the_model_as_it_was():
    table, _ = _world()
    unknown = [Example(1.0, "u", table.text[:1].astype(np.float16), np.ones(1, np.float32),
                       "not-in-catalog")]
    trained, metrics = fit(Adapter.base("enc"), unknown, table, PARAMS, "enc+ft2")
    assert metrics["examples"] == 0 and metrics["steps"] == 0
    np.testing.assert_array_equal(trained.query, np.eye(D, dtype=np.float32))
    np.testing.assert_array_equal(trained.item, np.eye(D, dtype=np.float32))
    assert trained.residual_ids == ()
