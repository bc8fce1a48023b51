"""Records -> supervised token rows: chat rendering, completion-only loss masks, per-token gate labels,
packing without cross-sample attention, and deterministic batches.

Rendering uses the model's own chat template; each message's content is located in the rendered text and
tokens are labelled through the tokenizer's offset mapping: assistant content (plus the end-of-turn token
after it) is supervised, everything else is masked. Gate labels come from the sample's pathway or, for
mixed samples, from its character spans.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..model.losses import IGNORE
from ..records import Record
from .config import DataSection


@dataclass
class Example:
    id: str
    pathway: str
    input_ids: list[int]
    labels: list[int]  # IGNORE where not supervised
    gate_labels: list[int]  # pathway index, IGNORE where unlabelled

    @property
    def supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


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


def render(record: Record, tokenizer, pathways: list[str], cfg: DataSection) -> Example:
    """Tokens, loss mask and gate labels of one record (see the module docstring)."""
    text = tokenizer.apply_chat_template(record.messages, tokenize=False)
    n = len(text)
    supervised = np.zeros(n + 1, dtype=bool)
    label = np.full(n + 1, IGNORE, dtype=np.int64)
    sample = pathways.index(record.pathway) if record.pathway in pathways else None
    default = sample if sample is not None else pathways.index(cfg.mixed_default)
    cursor = 0
    for i, m in enumerate(record.messages):
        start = text.find(m["content"], cursor)
        if start < 0:
            raise ValueError(f"record {record.id}: message {i} is not verbatim in the chat template's output")
        end = cursor = start + len(m["content"])
        if m["role"] == "assistant":
            supervised[start:end] = True
            label[start:end] = default
        elif sample is not None and cfg.label_prompt:
            label[start:end] = sample
        for s in record.spans:
            if s["message"] == i and s["pathway"] in pathways:
                label[start + s["start"] : start + s["end"]] = pathways.index(s["pathway"])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    eos = tokenizer.eos_token_id
    labels, gates = [IGNORE] * len(ids), [IGNORE] * len(ids)
    for t, (a, b) in enumerate(offsets):
        if b > a:  # a token belongs where its last character is (byte-level BPE glues spaces in front)
            gates[t] = int(label[b - 1])
            if supervised[b - 1]:
                labels[t] = ids[t]
        if t and ids[t] == eos and labels[t - 1] != IGNORE and labels[t] == IGNORE:
            labels[t], gates[t] = ids[t], gates[t - 1]  # the end-of-turn right after an answer: learn to stop
    ids, labels, gates = ids[: cfg.max_seq_len], labels[: cfg.max_seq_len], gates[: cfg.max_seq_len]
    if not any(x != IGNORE for x in labels[1:]):
        raise ValueError(f"record {record.id}: no assistant tokens within max_seq_len ({cfg.max_seq_len})")
    labels[0] = IGNORE  # never predicted (and the boundary token when packed)
    return Example(record.id, record.pathway, ids, labels, gates)


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
