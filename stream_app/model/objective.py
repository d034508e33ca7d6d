"""The fine-tuning objective and the held-out score (pure: no Kafka, no Redis).

An example is what a user chose (the positive) for the interests they had just
before choosing it (base space, see ``adapter.py``). Training ranks the positive
above in-batch positives of other users, popularity-sampled items and the items
this user skipped or disliked (hard negatives), with a sampled softmax whose logits
are the serving score (cosine + popularity prior) over a temperature, corrected
by the log sampling probability so popular items are not over-punished. The
interest that scores the positive best is the one trained (multi-interest, as
served). The sequence term (the user's latest chosen items, ``adapter.py``) is
trained in the same logits: its context embeddings learn what users pick next.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np

from stream_app.evaluation.protocol import hit_ndcg
from stream_app.model.adapter import Adapter
from stream_app.model.ranking import rank_interests


MAX_HARD = 20  # the most recent skips and dislikes of an example that are trained on


@dataclass(frozen=True)
class Example:
    ts: float  # event time of the choice
    user_id: str
    interests: np.ndarray  # (m, d) unit directions before the choice, base space (float16)
    strengths: np.ndarray  # (m,) interest strengths at ts
    positive: str
    negatives: tuple[str, ...] = ()  # skipped or disliked: hard negatives
    seen: frozenset[str] = frozenset()  # excluded when scoring, as serving excludes them
    snapshot: int = -1  # the popularity prior as it was then (ItemTable.history); -1: none
    recent: tuple[str, ...] = ()  # the user's latest chosen items before this one, oldest first


@dataclass(frozen=True)
class FitParams:
    epochs: int = 2
    batch_size: int = 256
    lr: float = 1e-3  # of the two d x d maps
    residual_lr: float = 1e-2  # of the per-item residuals
    residual_l2: float = 1e-4  # pulls the residuals of the items a step touches to zero
    map_l2: float = 1e-3  # pulls the maps back to the identity
    temperature: float = 0.05
    sampled_negatives: int = 256
    skip_weight: float = 1.0  # how much one skip counts against the choice (1: a full negative)
    popularity_weight: float = 0.5  # the serving prior weight: trained as served
    sequence_decay: float = 0.8  # weight of each older recent item against the next newer one
    sequence_scale: float = 1.0  # the sequence term's starting scale, from the base model
    seed: int = 0


@dataclass
class ItemTable:
    """The catalog as a round sees it: text vectors, the prior at the round's cutoff, and
    the prior as it was at earlier moments (an example is trained and judged with the
    prior its own time had, as a worker ranked it then, not with later popularity)."""

    ids: Sequence[str]
    text: np.ndarray  # (N, d) text vectors
    prior: np.ndarray  # (N,) log(1 + decayed popularity) at the cutoff
    history: np.ndarray | None = None  # (S, N) the prior at S earlier moments
    history_rows: dict[int, int] = field(default_factory=dict)  # snapshot id -> row

    def priors(self, examples: Sequence[Example]) -> np.ndarray:
        """(len(examples), N): each example's prior."""
        rows = [self.history_rows.get(e.snapshot, -1) for e in examples]
        out = np.empty((len(examples), len(self.ids)), np.float32)
        for n, row in enumerate(rows):
            out[n] = self.history[row] if row >= 0 else self.prior
        return out

    @cached_property
    def lookup(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.ids)}

    def text_of(self, item_id: str) -> np.ndarray | None:
        row = self.lookup.get(item_id)
        return None if row is None else self.text[row]

    def rows(self, item_ids: Sequence[str]) -> list[int]:
        """Row of each item, -1 for items the table does not hold."""
        return [self.lookup.get(i, -1) for i in item_ids]

    def sampling(self) -> np.ndarray:
        """Negative sampling distribution: popularity^0.75, a floor for the long tail."""
        counts = np.expm1(np.maximum(np.asarray(self.prior, np.float64), 0.0))
        weights = np.power(counts, 0.75) + 0.1
        return weights / weights.sum()


def fit(adapter: Adapter, examples: Sequence[Example], table: ItemTable, params: FitParams,
        version: str) -> tuple[Adapter, dict[str, float]]:
    """A new version trained from ``adapter`` on ``examples`` (usable ones: known positive,
    at least one interest or recent item)."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    usable = [(e, r) for e, r in zip(examples, table.rows([e.positive for e in examples]))
              if r >= 0 and (len(e.interests) or e.recent)]
    d = table.text.shape[1]
    eye = np.eye(d, dtype=np.float32)
    query = torch.nn.Parameter(torch.tensor(adapter.query if adapter.query is not None else eye))
    item = torch.nn.Parameter(torch.tensor(adapter.item if adapter.item is not None else eye))
    residual = _per_item(table.ids, adapter._rows, adapter.residual, d)
    context = _per_item(table.ids, adapter._context_rows, adapter.context, d)
    text = torch.from_numpy(np.asarray(table.text, np.float32))
    padded_text = torch.cat([text, torch.zeros(1, d)])  # the padding row of the embeddings
    sampling = table.sampling()
    log_q = torch.from_numpy(np.log(sampling * len(sampling)).astype(np.float32))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(adapter.scale), dtype=torch.float32))
    log_seq = torch.nn.Parameter(torch.tensor(math.log(
        adapter.sequence_scale if adapter.sequence_scale > 0 else params.sequence_scale),
        dtype=torch.float32))
    dense_opt = torch.optim.Adam([query, item, log_scale, log_seq], lr=params.lr)
    sparse_opt = torch.optim.SparseAdam([residual.weight, context.weight],
                                        lr=params.residual_lr)
    ident = torch.eye(d)

    def item_vecs(rows: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(text[rows] @ item.T + residual(rows), dim=-1)

    losses, steps = [], 0
    for _ in range(params.epochs if usable else 0):
        order = rng.permutation(len(usable))
        for start in range(0, len(order), params.batch_size):
            batch = [usable[i] for i in order[start:start + params.batch_size]]
            seq = _sequence_queries(batch, padded_text, context, log_seq,
                                    params.sequence_decay, table)
            loss, rows = _batch_loss(batch, item_vecs, query, log_scale, seq[0], log_q,
                                     sampling, rng, params, table)
            loss = (loss + params.map_l2 * (((query - ident) ** 2).sum()
                                            + ((item - ident) ** 2).sum())
                    + params.residual_l2 * (_sq_norm(residual, rows)
                                            + _sq_norm(context, seq[1])))
            dense_opt.zero_grad()
            sparse_opt.zero_grad()
            loss.backward()
            dense_opt.step()
            sparse_opt.step()
            losses.append(float(loss.detach()))
            steps += 1
    residual_ids, residual_rows = _kept(table.ids, residual)
    context_ids, context_rows = _kept(table.ids, context)
    trained = Adapter(version=version, base_version=adapter.base_version,
                      query=query.detach().numpy().copy(), item=item.detach().numpy().copy(),
                      residual_ids=residual_ids, residual=residual_rows,
                      scale=float(log_scale.detach().exp()), context_ids=context_ids,
                      context=context_rows, sequence_scale=float(log_seq.detach().exp()),
                      sequence_decay=params.sequence_decay)
    tail = losses[-max(1, len(losses) // 4):] if losses else [math.nan]
    return trained, {"examples": len(usable), "steps": steps,
                     "loss": round(float(np.mean(tail)), 4),
                     "seconds": round(time.perf_counter() - started, 2)}


def _per_item(ids: Sequence[str], rows: dict[str, int], weights: np.ndarray | None, d: int):
    """A sparse per-item embedding (one row per table item, then a padding row) started
    from a version's rows (zero for items the version has none for: they start from
    their text)."""
    import torch

    emb = torch.nn.Embedding(len(ids) + 1, d, sparse=True, padding_idx=len(ids))
    with torch.no_grad():
        emb.weight.zero_()
        for n, item_id in enumerate(ids):
            row = rows.get(item_id)
            if row is not None:
                emb.weight[n] = torch.from_numpy(weights[row])
    return emb


def _kept(ids: Sequence[str], emb) -> tuple[tuple[str, ...], np.ndarray]:
    """The rows a version stores: the items with a non-zero embedding."""
    weights = emb.weight.detach().numpy()[:len(ids)]
    keep = np.flatnonzero(np.abs(weights).max(axis=1) > 1e-6)
    return tuple(ids[n] for n in keep), weights[keep].copy()


def _sq_norm(emb, rows):
    """Mean squared norm of these rows of an embedding (0 for no rows)."""
    return (emb(rows) ** 2).sum(dim=1).mean() if len(rows) else 0.0


def _sequence_queries(batch, padded_text, context, log_seq, decay: float, table: ItemTable):
    """(b, d) sequence queries of a batch (as ``Adapter.sequence_queries``) and the
    context rows they read."""
    import torch

    histories = [[r for r in table.rows(list(e.recent)) if r >= 0] for e, _ in batch]
    width = max((len(h) for h in histories), default=0)
    rows = np.full((len(batch), max(width, 1)), len(table.ids), np.int64)
    weights = np.zeros(rows.shape, np.float32)
    for n, history in enumerate(histories):
        for age, row in enumerate(reversed(history)):
            rows[n, age], weights[n, age] = row, decay ** age
    at = torch.from_numpy(rows)
    summed = ((padded_text[at] + context(at))
              * torch.from_numpy(weights)[..., None]).sum(dim=1)
    used = torch.unique(torch.from_numpy(rows[weights > 0]))
    return torch.nn.functional.normalize(summed, dim=-1) * log_seq.exp(), used


def _batch_loss(batch, item_vecs, query, log_scale, seq, log_q, sampling, rng,
                params: FitParams, table: ItemTable):
    import torch

    b = len(batch)
    m = max(1, max(len(e.interests) for e, _ in batch))
    d = table.text.shape[1]
    dirs = np.zeros((b, m, d), np.float32)
    mask = np.zeros((b, m), bool)
    for n, (e, _) in enumerate(batch):
        dirs[n, :len(e.interests)] = e.interests
        mask[n, :len(e.interests)] = True
    pos = torch.tensor([r for _, r in batch])
    sampled = torch.from_numpy(rng.choice(len(sampling), params.sampled_negatives, p=sampling))
    hard = [[r for r in table.rows(list(e.negatives[-MAX_HARD:])) if r >= 0 and r != pr]
            for e, pr in batch]
    width = max((len(h) for h in hard), default=0)
    hard_rows = torch.tensor([h + [pr] * (width - len(h)) for h, (_, pr) in zip(hard, batch)],
                             dtype=torch.long).reshape(b, width)
    # every item this batch touches, mapped once (the costly part of a step)
    rows, where = torch.unique(torch.cat([pos, sampled, hard_rows.flatten()]),
                               return_inverse=True)
    vecs = item_vecs(rows)
    pos_at, cand_at = where[:b], where[:b + len(sampled)]
    q = torch.nn.functional.normalize(torch.from_numpy(dirs) @ query.T, dim=-1)  # (b, m, d)
    with torch.no_grad():
        fit_k = torch.einsum("bmd,bd->bm", q, vecs[pos_at]).masked_fill(
            ~torch.from_numpy(mask), -math.inf).argmax(dim=1)
    q = q[torch.arange(b), fit_k] * log_scale.exp()  # (b, d): the interest that explains it
    cands = torch.cat([pos, sampled])
    prior = torch.from_numpy(table.priors([e for e, _ in batch])) * params.popularity_weight
    logits = ((q + seq) @ vecs[cand_at].T + prior[:, cands]
              - params.temperature * log_q[cands])
    same = cands[None, :] == pos[:, None]
    same[torch.arange(b), torch.arange(b)] = False  # the positive's own column stays
    logits = logits.masked_fill(same, -math.inf)
    if width:
        valid = torch.tensor([[True] * len(h) + [False] * (width - len(h)) for h in hard])
        hard_vecs = vecs[where[b + len(sampled):]].reshape(b, width, -1)
        # weight w in the softmax's denominator: w * exp(logit / T)
        hard_logits = (torch.einsum("bd,bhd->bh", q + seq, hard_vecs)
                       + torch.gather(prior, 1, hard_rows)
                       + params.temperature * math.log(params.skip_weight))
        logits = torch.cat([logits, hard_logits.masked_fill(~valid, -math.inf)], dim=1)
    return torch.nn.functional.cross_entropy(logits / params.temperature, torch.arange(b)), rows


def score(adapter: Adapter, examples: Sequence[Example], table: ItemTable,
          popularity_weight: float, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of ``adapter`` on ``examples``, ranked exactly as a worker ranks."""
    vectors = adapter.item_vectors(table.ids, table.text)
    lookup = table.lookup
    sequences = adapter.sequence_queries([e.recent for e in examples], table.text_of)
    hits = ndcg = 0.0
    n = 0
    for row, e in enumerate(examples):
        if e.positive not in lookup:
            continue
        base = popularity_weight * table.priors([e])[0]  # as Processor._base_scores
        if sequences is not None:
            base = base + sequences[row] @ vectors.T
        if len(e.interests):
            sims = adapter.queries(np.asarray(e.interests, np.float32)) @ vectors.T
        else:
            sims = np.zeros((0, len(table.ids)), np.float32)
        exclude = [lookup[i] for i in e.seen if i in lookup]
        ranked = rank_interests(sims, np.asarray(e.strengths, np.float64), base, k, exclude)
        hit, gain = hit_ndcg([table.ids[r] for r, _, _ in ranked], e.positive, k)
        hits += hit
        ndcg += gain
        n += 1
    return {"hr@10": round(hits / n, 4) if n else 0.0,
            "ndcg@10": round(ndcg / n, 4) if n else 0.0, "n": n}


def train_and_judge(start: Adapter, current: Adapter, data: Sequence[Example],
                    held: Sequence[Example], table: ItemTable, params: FitParams, version: str
                    ) -> tuple[Adapter, dict[str, float], dict[str, dict[str, float]]]:
    """A round's work in one call (so it can run in another process): the candidate,
    trained from ``start``, its training metrics, and candidate, current and plain
    encoder scored on ``held``."""
    candidate, fitted = fit(start, data, table, params, version)
    w = params.popularity_weight
    scores = {"candidate": score(candidate, held, table, w),
              "current": score(current, held, table, w),
              "base": score(Adapter.base(current.base_version), held, table, w)}
    return candidate, fitted, scores


def training_process(threads: int) -> None:
    """Set up a training process: torch imported ahead of the first round (seconds a
    round need not wait) and its thread count fixed, so a round is reproducible."""
    import torch

    torch.set_num_threads(threads)
