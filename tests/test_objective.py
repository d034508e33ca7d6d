"""The sequence model and a round's work, on problems the text alone cannot solve.

Pure: no Kafka, no Redis. A synthetic world of 60 items with random unit text vectors
(d=8) where whoever chose item i chooses ``follows[i]`` next: only a model that reads
the user's latest items can learn that.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.model.adapter import Adapter
from stream_app.model.objective import (
    MAX_HARD,
    Example,
    ItemTable,
    SparseScores,
    blend_for,
    score,
    score_each,
    sequences,
    train_and_judge,
    training_process,
)
from stream_app.model.scoring import BLEND_PARTS, Defaults, judged, parts, rank_parts
from stream_app.model.sequence import (
    SequenceParams,
    SequenceScorer,
    Window,
    _dropped,
    _proposal,
    fit_sequence,
    log_q_correction,
    windows_of,
)

N, D, LENGTH = 60, 8, 8
IDS = [f"i{n}" for n in range(N)]
NO_WEIGHTS = Defaults(popularity=0.0, covisit=0.0, interest=1.0, fitted=BLEND_PARTS,
                      margin=1.0, sequence=1.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # reproducible fits


def params(**changes) -> SequenceParams:
    """A small model; everything else as the settings have it."""
    small = replace(Settings().sequence_params(), length=LENGTH, dim=16, blocks=1, heads=1,
                    dropout=0.0, lr=1e-2, epochs=20.0, batch_size=32)
    return replace(small, **changes)


def world(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) unit text vectors and the successor map."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(N, D))
    return (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32), \
        rng.permutation(N)


def chains(follows: np.ndarray, users: int, seed: int, longest: int = 12) -> list[list[int]]:
    """Each user starts at a random item and follows the map for 2..longest items."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(users):
        seq = [int(rng.integers(N))]
        for _ in range(int(rng.integers(2, longest + 1)) - 1):
            seq.append(int(follows[seq[-1]]))
        out.append(seq)
    return out


def hit_rate(adapter: Adapter, text: np.ndarray, held: list[list[int]], k: int = 10) -> float:
    """Share of held-out sequences whose last item is in the top k after the rest."""
    items = adapter.item_vectors(IDS, text)
    queries = adapter.sequence_queries([seq[:-1] for seq in held], items)
    top = np.argsort(-(queries @ items.T), axis=1)[:, :k]
    return float(np.mean([seq[-1] in row for seq, row in zip(held, top)]))


def test_the_sequence_model_learns_what_follows_the_last_item():
    text, follows = world()
    train = chains(follows, 300, seed=1)
    windows = windows_of(train, [[] for _ in train], LENGTH)
    weights, stats = fit_sequence(None, windows, IDS, text, params())
    untrained, nothing = fit_sequence(None, [], IDS, text, params())
    assert stats["windows"] == len(windows) and stats["steps"] > 0
    assert stats["positions"] > 0 and np.isfinite(stats["loss"])
    assert nothing["steps"] == nothing["positions"] == 0 and untrained.item_ids == ()
    assert set(weights.item_ids) == set(IDS)  # the full softmax trains every ID row
    held = chains(follows, 300, seed=2)  # some longer than the model reads: the tail counts
    trained = Adapter("enc+ft00001", "enc", weights)
    before = hit_rate(Adapter("enc+ft0", "enc", untrained), text, held)
    after = hit_rate(trained, text, held)
    assert before < 0.3 and after > 0.8, (before, after)
    # the adapter's queries are the scorer's
    items = trained.item_vectors(IDS, text)
    np.testing.assert_array_equal(trained.sequence_queries([held[0][:-1]], items),
                                  SequenceScorer(weights).queries([held[0][:-1]], items))


@pytest.mark.parametrize("changes", [
    {"full_softmax_items": 30, "negatives": 20},  # a "large" catalog: the sampled softmax
    {"use_text": False},  # ablation: ID embeddings only
    {"use_ids": False},  # ablation: projected text only
], ids=["sampled-softmax", "ids-only", "text-only"])
def test_every_way_of_training_learns_the_successors(changes):
    text, follows = world()
    train = chains(follows, 300, seed=1)
    weights, stats = fit_sequence(None, windows_of(train, [[] for _ in train], LENGTH), IDS,
                                  text, params(**changes))
    assert stats["steps"] > 0 and np.isfinite(stats["loss"])
    assert hit_rate(Adapter("enc+ft1", "enc", weights), text, chains(follows, 300, 2)) > 0.8
    fresh = np.ones((1, D), np.float32) / np.sqrt(D)
    new = SequenceScorer(weights).item_vectors(["new"], fresh)[0]
    if changes.get("use_text") is False:
        assert not new.any()  # no ID row and no text to go by
    else:
        np.testing.assert_allclose(new, fresh[0] @ weights.arrays["proj.weight"].T, atol=1e-6)
    if changes.get("use_ids") is False:
        assert weights.item_ids == () and weights.id_rows.shape == (0, 16)
    back = Adapter.from_bytes(Adapter("enc+ft1", "enc", weights).to_bytes()).sequence
    assert (back.use_text, back.use_ids) == (weights.use_text, weights.use_ids)


@pytest.mark.parametrize("unused", [0, 500], ids=["full-softmax", "sampled-softmax"])
def test_skips_push_an_item_down(unused):
    """After item a, half the users choose b and half c: nothing tells them apart but the
    skips of c that b's choosers made before choosing b. With the sampled softmax (a
    catalog of ``unused`` more items first, never chosen) a step represents only the items
    it reads, the skipped ones among them, and must find each at its own row."""
    text, follows = world(1)
    other = np.roll(follows, 1)  # a second successor, never the first
    starts = np.repeat(np.arange(N), 10)
    seqs = [[unused + int(a), unused + int(follows[a] if k % 2 else other[a])]
            for k, a in enumerate(starts)]
    skips = [[unused + int(other[a])] if k % 2 else [] for k, a in enumerate(starts)]
    extra = np.random.default_rng(5).normal(size=(unused, D))
    catalog = np.vstack([extra / np.linalg.norm(extra, axis=1, keepdims=True), text])
    ids = [f"unused{k}" for k in range(unused)] + IDS
    p = params(epochs=30.0, skip_weight=1.0,
               **({"full_softmax_items": 30, "negatives": 20} if unused else {}))
    plain, _ = fit_sequence(None, windows_of(seqs, [[] for _ in seqs], LENGTH), ids,
                            catalog, p)
    heard, _ = fit_sequence(None, windows_of(seqs, skips, LENGTH), ids, catalog, p)

    def margin(weights) -> float:
        """Mean score of b minus score of c after a."""
        scorer = SequenceScorer(weights)
        items = scorer.item_vectors(IDS, text)
        scores = scorer.queries([[a] for a in range(N)], items) @ items.T
        return float(np.mean([scores[a, follows[a]] - scores[a, other[a]] for a in range(N)]))

    assert margin(heard) > margin(plain) + 0.15 and margin(heard) > 0.1, \
        (margin(plain), margin(heard))


def test_an_item_no_round_trained_on_is_scored_from_its_text():
    text, follows = world()
    train = chains(follows, 100, seed=1)
    weights, _ = fit_sequence(None, windows_of(train, [[] for _ in train], LENGTH), IDS, text,
                              params(epochs=2.0))
    fresh = np.random.default_rng(9).normal(size=(1, D)).astype(np.float32)
    scorer = SequenceScorer(weights)
    vecs = scorer.item_vectors([*IDS, "new"], np.vstack([text, fresh]))
    assert "new" not in weights.item_ids
    project = weights.arrays["proj.weight"]  # (dim, D)
    np.testing.assert_allclose(vecs[-1], fresh[0] @ project.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(vecs[-1]) > 0.1
    row = weights.item_ids.index("i3")  # a trained item: its text plus its ID row
    np.testing.assert_allclose(vecs[3], text[3] @ project.T + weights.id_rows[row], rtol=1e-5,
                               atol=1e-6)
    # it can be recommended: a finite score after any history
    scores = scorer.queries([[0, 1]], vecs) @ vecs.T
    assert np.isfinite(scores).all()


def test_id_dropout_teaches_the_text_path_to_stand_alone():
    """Served without any ID row (every item as new as it can be), a model trained with ID
    dropout still finds the successors; one trained without leaned on its ID rows."""
    text, follows = world()
    train = chains(follows, 300, seed=1)
    windows = windows_of(train, [[] for _ in train], LENGTH)
    held = chains(follows, 300, seed=2)
    alone = {}
    for share in (0.0, 0.5):
        weights, _ = fit_sequence(None, windows, IDS, text, params(id_dropout=share, epochs=5.0))
        assert set(weights.item_ids) == set(IDS)  # ID rows are still learned and served
        assert hit_rate(Adapter("enc+ft1", "enc", weights), text, held) > 0.95
        bare = replace(weights, item_ids=(), id_rows=weights.id_rows[:0])
        alone[share] = hit_rate(Adapter("enc+ft1", "enc", bare), text, held)
    assert alone[0.0] < 0.45 and alone[0.5] > 0.55, alone


def test_id_dropout_zeroes_whole_rows_and_leaves_the_ablations_alone():
    import torch

    ids = torch.from_numpy(np.random.default_rng(0).normal(size=(20000, 4)).astype(np.float32))
    rng = np.random.default_rng(1)
    assert _dropped(ids, params(id_dropout=0.0), rng) is ids
    assert _dropped(ids, params(id_dropout=0.3, use_text=False), rng) is ids  # nothing else
    out = _dropped(ids, params(id_dropout=0.3), rng).numpy()
    zero = ~out.any(axis=1)
    assert abs(zero.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(out[~zero], ids.numpy()[~zero])
    with pytest.raises(ValueError, match="SEQUENCE_ID_DROPOUT"):
        Settings(sequence_id_dropout=1.0).validate()


def test_a_fit_goes_on_from_its_start_when_the_shape_still_fits():
    text, follows = world()
    train = chains(follows, 50, seed=1)
    start, _ = fit_sequence(None, windows_of(train, [[] for _ in train], LENGTH), IDS, text,
                            params(epochs=1.0))
    same, stats = fit_sequence(start, [], IDS, text, params())  # nothing to train on
    assert stats["steps"] == 0 and same.item_ids == start.item_ids
    for name, array in start.arrays.items():
        np.testing.assert_array_equal(same.arrays[name], array)
    np.testing.assert_array_equal(same.id_rows, start.id_rows)
    # ID rows follow the items, not the rows: a reordered catalog keeps each item's row
    order = IDS[::-1]
    moved, _ = fit_sequence(start, [], order, text[::-1].copy(), params())
    assert set(moved.item_ids) == set(start.item_ids)
    for item in ("i0", "i7", "i59"):
        np.testing.assert_array_equal(moved.id_rows[moved.item_ids.index(item)],
                                      start.id_rows[start.item_ids.index(item)])
    wider, _ = fit_sequence(start, [], IDS, text, params(dim=32))  # another shape: fresh
    assert wider.dim == 32 and wider.item_ids == ()


def test_windows_cut_each_sequence_so_every_transition_is_trained_once():
    rng = np.random.default_rng(4)
    seqs = [list(rng.integers(100, size=n)) for n in (0, 1, 2, 5, 9, 10, 17, 20, 40)]
    negs = [[1000 + n] for n in range(len(seqs))]
    windows = windows_of(seqs, negs, LENGTH)
    assert all(2 <= len(w.rows) <= LENGTH + 1 for w in windows)
    by_seq: dict[int, list[Window]] = {}
    at = 0
    for n, seq in enumerate(seqs):  # a sequence's windows come together, the newest first
        count = max(0, -(-(len(seq) - 1) // LENGTH))
        by_seq[n] = windows[at:at + count]
        at += count
    assert at == len(windows)
    for n, seq in enumerate(seqs):
        mine = by_seq[n]
        trained = [pos for start, w in zip(_starts(seq, mine), mine)
                   for pos in range(start, start + len(w.rows) - 1)]  # pos -> pos + 1
        assert sorted(trained) == list(range(len(seq) - 1)), n  # each transition once
        for newer, older in pairwise(mine):
            assert older.rows[-1] == newer.rows[0]  # consecutive windows share one item
        if mine:
            assert mine[0].rows[-1] == seq[-1] and mine[0].negatives == (1000 + n,)
            assert all(w.negatives == () for w in mine[1:])  # skips: before the last only
    assert windows_of([[1, 2, 3]], [[]], 8) == [Window((1, 2, 3), ())]
    assert windows_of([[7]], [[5]], 8) == [] and windows_of([], [], 8) == []
    assert windows_of([list(range(20))], [[]], 8) == [
        Window(tuple(range(11, 20))), Window(tuple(range(3, 12))), Window((0, 1, 2, 3))]


def _starts(seq: list[int], windows: list[Window]) -> list[int]:
    """Where each window begins in ``seq`` (windows are cut from the end backwards)."""
    out, end = [], len(seq)
    for w in windows:
        start = end - len(w.rows)
        assert list(seq[start:end]) == list(w.rows)
        out.append(start)
        end = start + 1
    return out


def _example(ts: float, user: str, positive: str, recent: tuple[str, ...] = (),
             negatives: tuple[str, ...] = (), interests: np.ndarray | None = None,
             seen: frozenset[str] = frozenset()) -> Example:
    interests = np.zeros((0, D), np.float16) if interests is None else interests
    return Example(ts, user, interests, np.ones(len(interests), np.float32), positive,
                   negatives, seen, recent=recent)


def test_sequences_are_each_users_choices_in_event_time_order():
    text, _ = world()
    table = ItemTable(IDS, text, np.zeros(N, np.float32))
    examples = [
        _example(5.0, "u", "i3", recent=("i1", "i2"), negatives=("i9",)),
        _example(1.0, "u", "i2", recent=("i0", "i1")),  # u's first: its items come first
        _example(2.0, "v", "gone", recent=("i5",)),  # an item the table lacks: left out
        _example(9.0, "u", "i4", recent=("i1", "i2", "i3"),
                 negatives=tuple(f"i{n}" for n in range(10, 40)) + ("gone",)),
        _example(3.0, "v", "i6", recent=("i5", "gone")),
        _example(4.0, "w", "i7"),
    ]
    seqs, negatives = sequences(examples, table)
    assert seqs == [[0, 1, 2, 3, 4], [5, 6], [7]]  # users in order of their first choice
    # the skips before each user's latest choice: the newest MAX_HARD of them, those the
    # table holds ("gone", the newest, takes its place among the 20 and is then left out)
    assert MAX_HARD == 20
    assert negatives == [list(range(21, 40)), [], []]
    assert sequences([], table) == ([], [])


def test_item_table_gives_each_example_its_own_prior_and_co_visits():
    text, _ = world()
    history = np.stack([np.full(N, 1.0, np.float32), np.full(N, 2.0, np.float32)])
    table = ItemTable(IDS, text, np.zeros(N, np.float32), history, {7: 0, 8: 1})
    examples = [replace(_example(1.0, "u", "i1"), snapshot=8,
                        covisit=SparseScores(("i3", "gone", "i5"), np.array([0, 1, 2]),
                                             np.array([0.5, 0.9, 0.25], np.float32))),
                replace(_example(2.0, "u", "i2"), snapshot=-1),
                # scores over the catalog as it was in another order: found by id
                replace(_example(3.0, "u", "i3"),
                        covisit=SparseScores(("i5", "i3", "gone"), np.array([1, 2]),
                                             np.array([0.75, 0.125], np.float32)))]
    priors = table.priors(examples[:2])
    np.testing.assert_array_equal(priors[0], history[1])
    np.testing.assert_array_equal(priors[1], table.prior)  # no snapshot: the cutoff's
    covisits = table.covisits(examples)
    assert covisits.shape == (3, N) and covisits[1].sum() == 0
    assert (covisits[0, 3], covisits[0, 5]) == (0.5, 0.25) and covisits[0].sum() == 0.75
    assert covisits[2, 3] == 0.75 and covisits[2].sum() == 0.75
    assert examples[2].covisit.as_dict() == {"i3": 0.75, "gone": 0.125}
    assert table.rows(["i2", "gone"]) == [2, -1] and table.text_of("gone") is None


def _examples(follows: np.ndarray, text: np.ndarray, users: range, seed: int,
              t0: float) -> list[Example]:
    """Every choice of each user's chain after the first, with the items before it, the
    user's interest pointing at the last item's text (which does not predict the next)."""
    out = []
    for u, seq in zip(users, chains(follows, len(users), seed, longest=6)):
        for pos in range(1, len(seq)):
            last = text[seq[pos - 1]][None].astype(np.float16)
            out.append(_example(t0 + 100.0 * u + pos, f"u{u}", IDS[seq[pos]],
                                recent=tuple(IDS[i] for i in seq[:pos]), interests=last,
                                seen=frozenset(IDS[i] for i in seq[:pos])))
    return out


def test_a_round_trains_a_candidate_that_beats_the_encoder_on_held_out_choices():
    text, follows = world()
    table = ItemTable(IDS, text, np.zeros(N, np.float32))
    train = _examples(follows, text, range(300), seed=1, t0=0.0)
    held = _examples(follows, text, range(300, 400), seed=2, t0=0.0)
    seqs, negatives = sequences(train, table)
    base = Adapter.base("enc")
    candidate, fitted, scores = train_and_judge(base, base, seqs, negatives, held, table,
                                                params(), NO_WEIGHTS, "enc+ft00001")
    assert (candidate.version, candidate.base_version) == ("enc+ft00001", "enc")
    assert not candidate.is_base and fitted["steps"] > 0
    assert fitted["blend"] == vars(candidate.blend)
    assert scores["current"] == scores["base"]  # the current version is the encoder here
    judged = len(held) - len(held) // 2  # the newer half; the older one fits the blend
    assert scores["candidate"]["n"] == scores["base"]["n"] == judged
    assert scores["base"]["hr@10"] < 0.3 and scores["candidate"]["hr@10"] > 0.8, scores
    assert scores["candidate"]["ndcg@10"] > scores["base"]["ndcg@10"] + 0.4
    assert candidate.blend.sequence > 0  # the sequence model is what ranks these
    # a version scored again ranks the same: score() is deterministic
    assert score(candidate, held[len(held) // 2:], table, NO_WEIGHTS) == scores["candidate"]
    # versions judged together score as each ranked alone the way a worker ranks
    barely, _ = fit_sequence(None, [Window((0, 1))], IDS, text, params(epochs=1.0))
    versions = {"barely trained": Adapter("enc+ft0", "enc", barely).with_blend(candidate.blend),
                "candidate": candidate, "base": base}
    assert score_each(versions, held, table, NO_WEIGHTS) == {
        name: _ranked_alone(adapter, held, table) for name, adapter in versions.items()}


def _ranked_alone(adapter: Adapter, examples: list[Example], table: ItemTable
                  ) -> dict[str, float]:
    """HR@10 and NDCG@10 through ``scoring.parts`` with the version's own item vectors,
    nothing shared with another version."""
    at = table.lookup
    p = parts(adapter, table.text, adapter.item_vectors(table.ids, table.text),
              table.priors(examples), [np.asarray(e.interests, np.float32) for e in examples],
              [[at[i] for i in e.recent] for e in examples], table.covisits(examples))
    lists = rank_parts(p, adapter.blend, NO_WEIGHTS, [e.strengths for e in examples],
                       [[at[i] for i in e.seen] for e in examples], 10)
    hr, gain = judged(lists, [at[e.positive] for e in examples], 10)
    return {"hr@10": round(hr, 4), "ndcg@10": round(gain, 4), "n": len(examples)}


def test_blend_for_leaves_the_encoder_and_an_empty_window_alone():
    text, follows = world()
    table = ItemTable(IDS, text, np.zeros(N, np.float32))
    held = _examples(follows, text, range(20), seed=2, t0=0.0)
    base = Adapter.base("enc")
    assert blend_for(base, held, table, NO_WEIGHTS) is base
    weights, _ = fit_sequence(None, [Window((0, 1))], IDS, text, params(epochs=1.0))
    trained = Adapter("enc+ft1", "enc", weights)
    assert blend_for(trained, [], table, NO_WEIGHTS) is trained
    unknown = [_example(1.0, "u", "gone", recent=("i1",))]
    assert blend_for(trained, unknown, table, NO_WEIGHTS) is trained
    assert score(trained, unknown, table, NO_WEIGHTS) == {"hr@10": 0.0, "ndcg@10": 0.0, "n": 0}


def _threads_class_and_nice() -> set[tuple[int, int]]:
    """(scheduling class, nice) of every thread of the calling process."""
    return {(os.sched_getscheduler(int(t)), os.getpriority(os.PRIO_PROCESS, int(t)))
            for t in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or not hasattr(os, "SCHED_IDLE"),
                    reason="Linux scheduling classes")
def test_the_training_process_runs_on_cpu_nobody_else_wants():
    """With ``trainer_nice`` > 0 every thread of the training process is idle-class (a
    worker that wakes takes the core at once) and lowered by it, numpy's thread pool,
    started before the process was set up, included; with 0 it keeps the normal class."""
    context = multiprocessing.get_context("spawn")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for nice, policy in ((10, os.SCHED_IDLE), (0, os.SCHED_OTHER)):
        with ProcessPoolExecutor(1, mp_context=context, initializer=training_process,
                                 initargs=(1, nice)) as pool:
            assert pool.submit(_threads_class_and_nice).result() == \
                {(policy, min(19, base + nice))}


def test_the_sampled_softmax_draws_popular_items_more_and_its_sum_is_unbiased():
    """Negatives come half uniformly, half by how often items are targets; with the log-Q
    correction the drawn candidates' sum of exp(logit) estimates the full sum."""
    windows = [Window((0, 1, 1, 1, 2)), Window((3, 1)), Window((4,))]
    q = _proposal(windows, 6)
    assert q.sum() == pytest.approx(1.0) and (q > 0).all()
    np.testing.assert_allclose(q, 0.5 / 6 + 0.5 * np.array([0, 4, 1, 0, 0, 0]) / 5)
    assert _proposal([], 4).tolist() == [0.25] * 4  # nothing to go by: uniform
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, 6)
    estimates = []
    for _ in range(20000):
        picked = rng.choice(6, 8, replace=True, p=q)
        estimates.append(np.exp(logits[picked] + log_q_correction(q, picked)).sum())
    assert np.mean(estimates) == pytest.approx(np.exp(logits).sum(), rel=0.02)
