"""Records -> supervised token rows (rendered by ``qwythos.chat``), packing without cross-sample attention,
and deterministic batches."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from ..chat import Example, render
from ..model.losses import IGNORE
from ..records import Record
from .config import DataSection


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)
    gate_labels: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    valid: torch.Tensor  # (B, T) bool: real tokens (not padding)
    seq_ids: torch.Tensor | None  # (B, T) packed sample ids; None when unpacked

    @property
    def tokens(self) -> int:
        return int(self.valid.sum())

    @property
    def supervised(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())


def render_all(
    records: list[Record],
    tokenizer,
    pathways: list[str],
    cfg: DataSection,
) -> tuple[list[Example], dict[str, int]]:
    """Render every record; ones that cannot train (no assistant tokens, ...) are skipped and counted."""
    out, skipped = [], {}
    for r in records:
        try:
            out.append(render(r, tokenizer, pathways, cfg))
        except ValueError as e:
            reason = "no_assistant_tokens" if "no assistant tokens" in str(e) else "template_mismatch"
            skipped[reason] = skipped.get(reason, 0) + 1
    return out, skipped


def pack(examples: list[Example], max_len: int) -> list[list[Example]]:
    """Fill rows of at most max_len tokens in order (keeping the curriculum); one example per row if it is
    longer than what is left."""
    rows: list[list[Example]] = []
    used = max_len
    for ex in examples:
        if used + len(ex.input_ids) > max_len:
            rows.append([])
            used = 0
        rows[-1].append(ex)
        used += len(ex.input_ids)
    return rows


def collate(rows: list[list[Example]], pad_id: int, packed: bool) -> Batch:
    """Right-pad rows into tensors; packed rows get per-sample position ids and sample ids."""
    T = max(sum(len(e.input_ids) for e in row) for row in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    gates = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    seq = torch.full((B, T), -1, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    for b, row in enumerate(rows):
        t = 0
        for k, e in enumerate(row):
            n = len(e.input_ids)
            ids[b, t : t + n] = torch.tensor(e.input_ids)
            labels[b, t : t + n] = torch.tensor(e.labels)
            gates[b, t : t + n] = torch.tensor(e.gate_labels)
            pos[b, t : t + n] = torch.arange(n)
            seq[b, t : t + n] = k
            valid[b, t : t + n] = True
            t += n
        pos[b, t:] = torch.arange(T - t)
    return Batch(ids, labels, gates, pos, valid, seq if packed else None)


def epoch_rows(examples: list[Example], cfg: DataSection, epoch: int, seed: int) -> list[list[Example]]:
    """The rows of one epoch: curriculum order, or a seeded shuffle of it when data.shuffle is set."""
    order = list(examples)
    if cfg.shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return pack(order, cfg.max_seq_len) if cfg.pack else [[e] for e in order]


def plan_steps(
    examples: list[Example],
    cfg: DataSection,
    epochs: float,
    rows_per_step: int,
    seed: int,
) -> list[list[list[Example]]]:
    """Every optimiser step's rows for a stage (deterministic, so a resumed run sees the same batches)."""
    whole, frac = int(epochs), epochs - int(epochs)
    rows: list[list[Example]] = []
    for e in range(whole + (1 if frac > 0 else 0)):
        r = epoch_rows(examples, cfg, e, seed)
        rows += r if e < whole else r[: max(1, math.ceil(len(r) * frac))]
    return [rows[i : i + rows_per_step] for i in range(0, len(rows), rows_per_step)]
