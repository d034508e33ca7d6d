"""The sequence model: what a user picks next, from the items they picked last.

A SASRec-style causal self-attention encoder over the user's latest chosen items.
An item's representation is a learned projection of its text vector plus a learned
per-item ID embedding that starts at zero, so an item no round has trained on is
scored from its text alone. The user's query is the encoder's output at the newest
position; an item scores ``query . item``. Trained with cross-entropy over the whole
catalog (or, for catalogs above ``full_softmax_items``, a sampled softmax with the
log-Q correction), at every position of a window of a user's sequence at once.

Pure model code: numpy in and out, torch inside, no I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class SequenceParams:
    """Shape and training of the sequence model (no defaults here: ``Settings`` holds them)."""

    length: int  # latest chosen items read per user
    dim: int
    blocks: int
    heads: int
    dropout: float
    lr: float
    epochs: float  # passes over a round's windows
    batch_size: int  # windows per step
    full_softmax_items: int  # above this catalog size: sampled softmax
    negatives: int  # sampled negatives per step (sampled softmax only)
    skip_weight: float  # weight of a skipped / disliked item in the softmax's denominator
    seed: int
    id_dropout: float  # share of ID rows left out at each step (text must stand alone)
    use_text: bool = True  # items represented by their projected text vector ...
    use_ids: bool = True  # ... plus their ID embedding (the ablations turn one off)


@dataclass(frozen=True)
class SequenceWeights:
    """A trained sequence model: its arrays by name and the items its ID rows belong to."""

    arrays: dict[str, np.ndarray]  # torch state dict as float32 arrays, minus the ID table
    item_ids: tuple[str, ...]  # items with an ID embedding row
    id_rows: np.ndarray  # (len(item_ids), dim)
    length: int
    dim: int
    blocks: int
    heads: int
    use_text: bool = True
    use_ids: bool = True

    @property
    def text_dim(self) -> int:
        return int(self.arrays["proj.weight"].shape[1])

    def shape(self) -> dict[str, int]:
        return {"length": self.length, "dim": self.dim, "blocks": self.blocks,
                "heads": self.heads, "use_text": self.use_text, "use_ids": self.use_ids}


def _module(text_dim: int, length: int, dim: int, blocks: int, heads: int, dropout: float,
            use_text: bool = True):
    import torch

    class SASRec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(text_dim, dim, bias=False)
            self.pos = torch.nn.Embedding(length, dim)
            torch.nn.init.normal_(self.pos.weight, std=0.02)
            self.blocks = torch.nn.ModuleList(
                torch.nn.TransformerEncoderLayer(dim, heads, dim, dropout, batch_first=True,
                                                 norm_first=True) for _ in range(blocks))
            self.norm = torch.nn.LayerNorm(dim)
            self.drop = torch.nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(length, length,
                                                                dtype=torch.bool), 1),
                                 persistent=False)

        def items(self, text: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            """(N, dim) item representations from text vectors and ID embeddings."""
            return self.proj(text) + ids if use_text else ids

        def forward(self, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            """(b, L) rows into ``table`` (left-padded with -1) -> (b, L, dim) queries."""
            real = rows >= 0
            x = table[rows.clamp(min=0)] * math.sqrt(dim) + self.pos.weight[None]
            x = self.drop(x) * real[..., None]
            for block in self.blocks:
                x = block(x, src_mask=self.mask, is_causal=True)
            return self.norm(x)

    return SASRec()


def _state(model, weights: SequenceWeights | None) -> None:
    import torch

    if weights is None:
        return
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.arrays.items()}
    model.load_state_dict(state)


def _id_table(item_ids: Sequence[str], weights: SequenceWeights | None, dim: int) -> np.ndarray:
    """(len(item_ids), dim): each item's ID row from ``weights``, zero where it has none."""
    table = np.zeros((len(item_ids), dim), np.float32)
    if weights is not None and len(weights.item_ids):
        known = {item_id: n for n, item_id in enumerate(weights.item_ids)}
        for n, item_id in enumerate(item_ids):
            row = known.get(item_id)
            if row is not None:
                table[n] = weights.id_rows[row]
    return table


class SequenceScorer:
    """A trained model ready to serve: item vectors for a catalog, queries for histories."""

    def __init__(self, weights: SequenceWeights) -> None:
        import torch

        self.weights = weights
        self._torch = torch
        self.model = _module(weights.text_dim, weights.length, weights.dim, weights.blocks,
                             weights.heads, 0.0, weights.use_text).eval()
        _state(self.model, weights)

    def item_vectors(self, item_ids: Sequence[str], text: np.ndarray) -> np.ndarray:
        """(N, dim) representations of these items (text projection + ID embedding)."""
        torch = self._torch
        with torch.no_grad():
            out = self.model.items(torch.from_numpy(np.ascontiguousarray(text, np.float32)),
                                   torch.from_numpy(_id_table(item_ids, self.weights,
                                                              self.weights.dim)))
        return out.numpy()

    def queries(self, histories: Sequence[Sequence[int]], items: np.ndarray) -> np.ndarray:
        """(len(histories), dim): the query after each history (rows into ``items``, oldest
        first); an empty history gives a zero query."""
        torch = self._torch
        rows = _padded(histories, self.weights.length)
        with torch.no_grad():
            out = self.model(torch.from_numpy(rows), torch.from_numpy(
                np.ascontiguousarray(items, np.float32)))[:, -1]
        out[torch.from_numpy((rows >= 0).sum(axis=1) == 0)] = 0.0
        return out.numpy()


def _padded(histories: Sequence[Sequence[int]], length: int) -> np.ndarray:
    rows = np.full((len(histories), length), -1, np.int64)
    for n, history in enumerate(histories):
        tail = list(history)[-length:]
        if tail:
            rows[n, length - len(tail):] = tail
    return rows


@dataclass(frozen=True)
class Window:
    """Training data of one user: items in choice order (rows of the round's table); every
    position predicts the next. ``negatives``: items skipped or disliked before the last."""

    rows: tuple[int, ...]
    negatives: tuple[int, ...] = ()


def windows_of(sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
               length: int) -> list[Window]:
    """Each user's full sequence cut into windows of ``length + 1`` items from the newest
    back (consecutive windows share one item, so every transition is trained once)."""
    out = []
    for seq, neg in zip(sequences, negatives):
        seq = list(seq)
        end, first = len(seq), True
        while end >= 2:
            start = max(0, end - length - 1)
            out.append(Window(tuple(seq[start:end]), tuple(neg) if first else ()))
            end, first = start + 1, False
            if start == 0:
                break
    return out


def fit_sequence(start: SequenceWeights | None, windows: Sequence[Window],
                 item_ids: Sequence[str], text: np.ndarray, params: SequenceParams
                 ) -> tuple[SequenceWeights, dict[str, Any]]:
    """A model trained from ``start`` (None: a fresh one) on ``windows``."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    n_items, text_dim = len(item_ids), text.shape[1]
    shape = (params.length, params.dim, params.blocks, params.heads, params.use_text,
             params.use_ids)
    compatible = (start is not None and start.text_dim == text_dim
                  and tuple(start.shape().values()) == shape)
    start = start if compatible else None
    model = _module(text_dim, params.length, params.dim, params.blocks, params.heads,
                    params.dropout, params.use_text)
    _state(model, start)
    table0 = _id_table(item_ids, start, params.dim)
    if not params.use_text and start is None:  # ID only: no text to start from
        table0 = rng.normal(0.0, 0.02, table0.shape).astype(np.float32)
    ids = torch.nn.Parameter(torch.from_numpy(table0), requires_grad=params.use_ids)
    text_t = torch.from_numpy(np.ascontiguousarray(text, np.float32))
    trained = [*model.parameters(), *([ids] if params.use_ids else [])]
    opt = torch.optim.Adam(trained, lr=params.lr, betas=(0.9, 0.98))
    sampled = n_items > params.full_softmax_items
    usable = [w for w in windows if len(w.rows) >= 2]
    proposal = _proposal(usable, n_items) if sampled else None
    steps = math.ceil(params.epochs * len(usable) / params.batch_size) if usable else 0
    model.train()
    losses, positions = [], 0
    for _ in range(steps):
        pick = rng.choice(len(usable), min(params.batch_size, len(usable)), replace=False)
        batch = [usable[i] for i in pick]
        inputs = _padded([w.rows[:-1] for w in batch], params.length)
        targets = _padded([w.rows[1:] for w in batch], params.length)
        table = model.items(text_t, _dropped(ids, params, rng))
        hidden = model(torch.from_numpy(inputs), table)
        real = torch.from_numpy(targets >= 0)
        h = hidden[real]
        y = torch.from_numpy(targets)[real]
        if sampled:
            drawn = params.negatives
            picked = rng.choice(n_items, drawn, replace=True, p=proposal)
            cands = torch.from_numpy(picked)
            logits = h @ table[cands].T + torch.from_numpy(log_q_correction(proposal, picked))
            logits = logits.masked_fill(cands[None, :] == y[:, None], -math.inf)
            logits = torch.cat([(h * table[y]).sum(-1, keepdim=True), logits], dim=1)
            target = torch.zeros(len(y), dtype=torch.long)
        else:
            logits, target = h @ table.T, y
        logits = torch.cat([logits, _hard(batch, hidden, table, params)], dim=1)
        loss = torch.nn.functional.cross_entropy(logits[:len(y)], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        positions += len(y)
    arrays = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    id_rows = ids.detach().numpy()
    keep = np.flatnonzero(np.abs(id_rows).max(axis=1) > 1e-8)
    weights = SequenceWeights(arrays, tuple(item_ids[n] for n in keep), id_rows[keep].copy(),
                              *shape)
    seconds = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 4):] if losses else [math.nan]
    return weights, {"windows": len(usable), "steps": steps, "positions": positions,
                     "loss": round(float(np.mean(tail)), 4), "seconds": round(seconds, 2),
                     "positions_per_s": round(positions / seconds, 1) if seconds else 0.0}


def _dropped(ids, params: SequenceParams, rng: np.random.Generator):
    """The ID table with a random ``id_dropout`` share of its rows zeroed for one step (an
    item then stands on its projected text, as a new item does when served)."""
    import torch

    if not (params.id_dropout > 0 and params.use_ids and params.use_text):
        return ids
    keep = rng.random(ids.shape[0]) >= params.id_dropout
    return ids * torch.from_numpy(keep.astype(np.float32))[:, None]


def _proposal(windows: Sequence[Window], n_items: int) -> np.ndarray:
    """The sampled softmax's negatives are drawn from half uniform, half how often each
    item is a target in the round's windows: the popular items, whose logits set most of
    the softmax's denominator, are drawn at nearly every step (uniform draws alone left
    them to a tenth of the steps at 10^4 items, and the model's loss climbed past a
    uniform guess round after round), and every item keeps a chance."""
    targets = [row for w in windows for row in w.rows[1:]]
    counts = np.bincount(np.asarray(targets, np.int64), minlength=n_items).astype(np.float64)
    uniform = np.full(n_items, 1.0 / n_items)
    if not counts.sum():
        return uniform
    return 0.5 * uniform + 0.5 * counts / counts.sum()


def log_q_correction(proposal: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """What to add to each drawn candidate's logit (``picked``, drawn with replacement from
    ``proposal``): a candidate stands for 1 / (draws * q) items of the softmax's sum, so
    the corrected sum estimates the full one without bias."""
    return -np.log(len(picked) * proposal[picked]).astype(np.float32)


def _hard(batch: Sequence[Window], hidden, table, params: SequenceParams):
    """Extra denominator terms for skipped / disliked items at each window's last position:
    (positions, h) logits, -inf where a window has fewer; weighted by ``skip_weight``."""
    import torch

    real_counts = [min(len(w.rows) - 1, params.length) for w in batch]
    total = sum(real_counts)
    width = max((len(w.negatives) for w in batch), default=0)
    out = torch.full((total, width), -math.inf)
    if not width:
        return out
    at = 0
    for n, (w, count) in enumerate(zip(batch, real_counts)):
        at += count
        if w.negatives:
            neg = torch.tensor([r for r in w.negatives if r != w.rows[-1]], dtype=torch.long)
            if len(neg):
                out[at - 1, :len(neg)] = (hidden[n, -1] @ table[neg].T
                                          + math.log(params.skip_weight))
    return out
