"""Steps 7-10: difficulty, budgeted diverse selection, curriculum order, and active-learning re-selection.

Difficulty is the mean percentile (within a pathway) of solution steps, response length and, when a model
is given, its per-sample loss. Selection walks candidates by quality x difficulty^w and keeps one unless
its pathway's sample or token budget is full (it goes to the pool for later rounds) or its embedding is
closer than tau to one already kept (DEITA's diversity rule; rejected with the neighbour as evidence).
``select_next`` is what the trainer calls between rounds: it re-ranks the pool by the current model's
instruction-following difficulty (IFD, Li et al. 2023) under the same budgets; ``score_with_model``
computes that IFD and the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import from_dict
from ..records import Record
from .config import Budget, CurriculumConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- step 7: difficulty


def percentile(values: np.ndarray) -> np.ndarray:
    """Rank of each value in [0, 1] (ties share their mean rank); one value -> 0.5."""
    if len(values) < 2:
        return np.full(len(values), 0.5)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    uniq, inverse = np.unique(values, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    return mean_rank[inverse] / (len(values) - 1)


def difficulty(pathways: np.ndarray, features: list[np.ndarray]) -> np.ndarray:
    """Mean percentile of each feature within each pathway, in [0, 1] (NaN features are left out)."""
    out = np.zeros(len(pathways))
    for p in np.unique(pathways):
        rows = np.flatnonzero(pathways == p)
        ranks = []
        for f in features:
            v = f[rows].astype(float)
            if np.isnan(v).all():
                continue
            r = np.full(len(rows), np.nan)
            ok = ~np.isnan(v)
            r[ok] = percentile(v[ok])
            ranks.append(r)
        if ranks:
            out[rows] = np.nan_to_num(np.nanmean(np.stack(ranks), axis=0), nan=0.5)
    return out


def solution_steps(response: str) -> int:
    """Steps of a worked solution: its non-empty lines, or sentences when it is one paragraph."""
    lines = [x for x in response.splitlines() if x.strip()]
    if len(lines) > 1:
        return len(lines)
    return max(1, sum(response.count(c) for c in ".!?"))


# ---------------------------------------------------------------- step 8: budgets and diversity


def as_budgets(budgets: dict) -> dict[str, Budget]:
    return {
        p: b if isinstance(b, Budget) else from_dict(Budget, b, f"budgets.{p}") for p, b in budgets.items()
    }


class BudgetTracker:
    """Per-pathway sample and token budgets; a pathway without an entry is unlimited."""

    def __init__(self, budgets: dict):
        self.budgets = as_budgets(budgets)
        self.samples: dict[str, int] = {}
        self.tokens: dict[str, int] = {}

    def fits(self, pathway: str, tokens: int) -> bool:
        b = self.budgets.get(pathway)
        if b is None:
            return True
        if b.samples is not None and self.samples.get(pathway, 0) + 1 > b.samples:
            return False
        return b.tokens is None or self.tokens.get(pathway, 0) + tokens <= b.tokens

    def add(self, pathway: str, tokens: int) -> None:
        self.samples[pathway] = self.samples.get(pathway, 0) + 1
        self.tokens[pathway] = self.tokens.get(pathway, 0) + tokens

    def full(self, pathways: Sequence[str]) -> bool:
        """True when no pathway in ``pathways`` can take even a zero-token sample."""
        return all(not self.fits(p, 0) for p in set(pathways))


@dataclass
class Selection:
    kept: np.ndarray  # candidate indices in selection order
    pool: np.ndarray  # over budget: kept for later active-learning rounds
    similar: dict[int, tuple[int, float]]  # candidate -> (kept neighbour, cosine)


class _Cells:
    """Kept vectors per (pathway, coarse cell) in growing arrays."""

    def __init__(self, dim: int):
        self.dim = dim
        self.ids: dict[tuple, list[int]] = {}
        self.vecs: dict[tuple, np.ndarray] = {}

    def matrix(self, key: tuple) -> np.ndarray | None:
        ids = self.ids.get(key)
        return self.vecs[key][: len(ids)] if ids else None

    def add(self, key: tuple, v: np.ndarray, i: int) -> None:
        ids = self.ids.setdefault(key, [])
        arr = self.vecs.get(key)
        if arr is None or len(arr) == len(ids):
            grown = np.zeros((max(16, 2 * len(ids)), self.dim), dtype=np.float32)
            if arr is not None:
                grown[: len(ids)] = arr
            self.vecs[key] = arr = grown
        arr[len(ids)] = v
        ids.append(i)


def _nearest_kept(cells: _Cells, keys: list[tuple], v: np.ndarray, near: np.ndarray) -> tuple:
    """(best cosine, kept index) of each block row against the vectors kept before the block (one matrix
    product per cell that any row probes)."""
    best = np.full(len(v), -1.0)
    best_j = np.full(len(v), -1, dtype=np.int64)
    groups: dict[tuple, list[int]] = {}
    for row, (p, cs) in enumerate(zip(keys, near.tolist(), strict=True)):
        for c in cs:
            groups.setdefault((p, c), []).append(row)
    for key, rows in groups.items():
        m = cells.matrix(key)
        if m is None:
            continue
        sims = v[rows] @ m.T  # (rows, kept in cell)
        j = sims.argmax(axis=1)
        top = sims[np.arange(len(rows)), j]
        better = top > best[rows]
        rows_a = np.asarray(rows)[better]
        best[rows_a] = top[better]
        best_j[rows_a] = np.asarray(cells.ids[key])[j[better]]
    return best, best_j


def select(
    score: np.ndarray,
    pathways: np.ndarray,
    tokens: np.ndarray,
    budgets: dict,
    embed: Callable[[np.ndarray], np.ndarray] | None,
    tau: float,
    block: int = 2048,
    cell_size: int = 4096,
    probes: int = 3,
) -> Selection:
    """Greedy selection by descending score under budgets, skipping near-neighbours (cosine > tau).

    ``embed(indices) -> (n, d)`` L2-normalised vectors, called lazily in blocks of candidates. The
    neighbour search is exact up to ``cell_size`` candidates; beyond, kept vectors are filed under the
    nearest of sqrt(probes * n) coarse centroids (evenly spaced candidates) and a candidate is compared
    with the kept vectors of its ``probes`` nearest cells (IVF-style: a neighbour across cells can be
    missed)."""
    order = np.lexsort((np.arange(len(score)), -score))
    tracker = BudgetTracker(budgets)
    kept: list[int] = []
    pool: list[int] = []
    similar: dict[int, tuple[int, float]] = {}
    all_pathways = sorted(set(pathways.tolist()))
    diverse = embed is not None and tau < 1.0 and len(order) > 0
    if diverse:
        # cost per candidate ~ cells + probes * kept / cells: least at cells = sqrt(probes * n)
        n_cells = 1 if len(order) <= cell_size else int(min(4096, np.sqrt(probes * len(order))))
        centroids = embed(order[np.unique(np.linspace(0, len(order) - 1, n_cells).astype(np.int64))])
        centre = centroids.mean(axis=0)  # assign cells on centred vectors: a shared component would
        centroids = centroids - centre  # pull everything into a few big cells
        cells = _Cells(centroids.shape[1])
        probes = min(probes, len(centroids))
    for lo in range(0, len(order), block):
        chunk = order[lo : lo + block]
        fits = [i for i in chunk if tracker.fits(pathways[i], int(tokens[i]))]
        if diverse and fits:
            v = embed(np.asarray(fits))
            sims = (v - centre) @ centroids.T  # (n, cells)
            near = np.argpartition(-sims, probes - 1, axis=1)[:, :probes] if probes < sims.shape[1] else None
            near = np.argsort(-sims, axis=1) if near is None else near
            order_in = np.argsort(-np.take_along_axis(sims, near, axis=1), axis=1)
            near = np.take_along_axis(near, order_in, axis=1)  # (n, probes) nearest cells first
            keys = [pathways[i] for i in fits]
            best, best_j = _nearest_kept(cells, keys, v, near)
            row_of = {i: k for k, i in enumerate(fits)}
            in_block: dict[tuple, list[int]] = {}  # rows kept earlier in this block, per (pathway, cell)
        for i in chunk:
            p, t = pathways[i], int(tokens[i])
            if not tracker.fits(p, t):
                pool.append(int(i))
                continue
            if diverse:
                k = row_of[i]
                b, bj = float(best[k]), int(best_j[k])
                for c in near[k].tolist():
                    for r in in_block.get((p, c), ()):
                        s = float(v[r] @ v[k])
                        if s > b:
                            b, bj = s, fits[r]
                if b > tau:
                    similar[int(i)] = (bj, b)
                    continue
                cells.add((p, int(near[k][0])), v[k], int(i))
                in_block.setdefault((p, int(near[k][0])), []).append(k)
            tracker.add(p, t)
            kept.append(int(i))
        if lo + block < len(order) and tracker.full(all_pathways):
            pool.extend(int(i) for i in order[lo + block :])
            break
    return Selection(np.asarray(kept, dtype=np.int64), np.asarray(pool, dtype=np.int64), similar)


# ---------------------------------------------------------------- step 9: curriculum


def curriculum(
    diff: np.ndarray, ids: Sequence[str], cfg: CurriculumConfig
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(order: positions of the selected records in training order, stage per record, stage summary)."""
    n = len(diff)
    if cfg.order == "none":
        return np.arange(n), np.zeros(n, dtype=np.int64), [{"stage": 0, "count": n}]
    if cfg.order == "easy_to_hard":
        order = np.lexsort((np.arange(n), diff))
        return order, np.zeros(n, dtype=np.int64), [{"stage": 0, "count": n}]
    # staged: difficulty quantiles; inside a stage a seeded shuffle interleaves the pathways
    edges = np.quantile(diff, np.linspace(0, 1, cfg.stages + 1)[1:-1]) if n else np.array([])
    stage = np.searchsorted(edges, diff, side="right").astype(np.int64)
    import xxhash

    shuffle = np.asarray([xxhash.xxh3_64_intdigest(f"{cfg.seed}:{i}".encode()) for i in ids], dtype=np.uint64)
    order = np.lexsort((shuffle, stage))
    summary = []
    for s in range(cfg.stages):
        rows = diff[stage == s]
        summary.append(
            {
                "stage": s,
                "count": int(len(rows)),
                "difficulty": [float(rows.min()), float(rows.max())] if len(rows) else None,
            }
        )
    return order, stage, summary


# ---------------------------------------------------------------- step 10: active learning


def response_tokens(record: Record) -> int:
    tokens = record.meta.get("tokens")
    if isinstance(tokens, int):
        return tokens
    from ..text import words

    return len(words(record.text))


def select_next(
    pool: list[Record],
    scores: dict[str, dict[str, float]],
    budgets: dict,
    exclude_ids: set[str] | None = None,
    max_ifd: float = 1.0,
) -> list[Record]:
    """The next active-learning batch: pool records the current model finds hardest to follow.

    Ranks by IFD (descending; loss breaks ties), drops records already used (``exclude_ids``), records
    without a finite score, and IFD >= ``max_ifd`` (the prompt does not help: likely misaligned, as in
    Li et al. 2023), then fills the per-pathway sample/token ``budgets`` ({pathway: {samples, tokens}})."""
    exclude_ids = exclude_ids or set()
    candidates = []
    for r in pool:
        s = scores.get(r.id)
        if r.id in exclude_ids or s is None:
            continue
        ifd, loss = float(s.get("ifd", math.nan)), float(s.get("loss", math.nan))
        if math.isfinite(ifd) and math.isfinite(loss) and ifd < max_ifd:
            candidates.append((-ifd, -loss, r.id, r))
    candidates.sort(key=lambda c: c[:3])
    tracker = BudgetTracker(budgets)
    chosen = []
    for *_, r in candidates:
        t = response_tokens(r)
        if tracker.fits(r.pathway, t):
            tracker.add(r.pathway, t)
            chosen.append(r)
    return chosen


def next_round(model, tokenizer, pool: list[Record], budgets: dict, used: set[str]):
    """An active-learning round for ``qwythos train --rounds``: (the records picked, their scores)."""
    scores = score_with_model(model, tokenizer, pool)
    return select_next(pool, scores, budgets, used), scores


def score_with_model(model, tokenizer, records: list[Record], batch_size: int = 8, max_tokens: int = 1024):
    """Per-record {"loss", "ifd"} under ``model`` (a qwythos PathwayLM, e.g. from ``load_model``).

    loss = mean token cross-entropy of the last assistant message given the conversation before it;
    ifd = loss / (the same message's loss with no prompt). Sequences are cut to ``max_tokens`` (right);
    a record whose response is cut away entirely scores NaN. Rendering uses the tokenizer's chat
    template; this is the one place to swap in the trainer's renderer."""
    import torch

    def render(messages: list[dict]) -> tuple[list[int], int]:
        """Token ids of the chat, and the index of the first response token."""
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        full = tokenizer.apply_chat_template(messages[: last + 1], tokenize=False)
        start = full.rfind(messages[last]["content"])
        if start < 0:
            raise ValueError("the chat template does not render the response text verbatim")
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        first = next(
            (k for k, (a, _) in enumerate(enc["offset_mapping"]) if a >= start), len(enc["input_ids"])
        )
        return enc["input_ids"][:max_tokens], first

    rows = []  # (record index, which: 0 conditional / 1 response alone, ids, first response token)
    for i, r in enumerate(records):
        last = max(k for k, m in enumerate(r.messages) if m["role"] == "assistant")
        rows.append((i, 0, *render(r.messages)))
        rows.append((i, 1, *render([r.messages[last]])))
    losses = np.full((len(records), 2), np.nan)
    rows.sort(key=lambda x: len(x[2]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            batch = rows[lo : lo + batch_size]
            T = max(len(b[2]) for b in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)
            valid = torch.zeros((len(batch), T), dtype=torch.bool)
            target = torch.zeros((len(batch), T), dtype=torch.bool)  # positions whose token is scored
            for k, (_, _, x, first) in enumerate(batch):
                ids[k, : len(x)] = torch.tensor(x)
                valid[k, : len(x)] = True
                target[k, max(first, 1) : len(x)] = True
            logits = model(ids.to(device), key_valid=valid.to(device)).logits.float()  # (B, T, V)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none"
            )  # (B, T-1): loss of token t+1
            mask = target[:, 1:].to(device)
            per_row = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
            for k, (i, which, _, _) in enumerate(batch):
                losses[i, which] = per_row[k].item() if mask[k].any() else math.nan
    return {
        r.id: {"loss": float(losses[i, 0]), "ifd": float(losses[i, 0] / losses[i, 1])}
        for i, r in enumerate(records)
    }


def select_round(
    dataset: str | Path,
    model: str | Path,
    out: str | Path,
    budgets: dict,
    exclude_ids: set[str] | None = None,
    batch_size: int = 8,
    max_tokens: int = 1024,
) -> Path:
    """One active-learning round from the command line: score the pool of a curated ``dataset`` with
    ``model``, pick the next batch with ``select_next`` and write it as a curated folder ``out``."""
    from ..dataset import read_manifest, read_pool, write_dataset
    from ..model.formats import load_model

    read_manifest(dataset)  # a clear error for a folder that is not a curated dataset
    exclude_ids = exclude_ids or set()
    pool = [r for r in read_pool(dataset) if r.id not in exclude_ids]
    lm, tokenizer, _ = load_model(model)
    log.info("scoring %d pool records with %s", len(pool), model)
    scores = score_with_model(lm, tokenizer, pool, batch_size, max_tokens)
    chosen = select_next(pool, scores, budgets, exclude_ids)
    for r in chosen:
        r.meta.update({"model_loss": scores[r.id]["loss"], "ifd": scores[r.id]["ifd"]})
    info = {
        "selected_from": str(dataset),
        "model": str(model),
        "budgets": {p: vars(b) for p, b in as_budgets(budgets).items()},
        "scored": len(scores),
        "excluded": len(exclude_ids),
    }
    return write_dataset(out, chosen, info)
