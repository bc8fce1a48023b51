"""Teacher-forced scoring: perplexity of held-out responses and the gate against per-token labels.

Records are rendered exactly as the trainer renders them (``qwythos.chat.render``: the chat template, the
assistant tokens supervised, each token's gate label from its sample's pathway or its span). One forward
per batch of right-padded records gives the negative log-likelihood of the response tokens and the gate
actually used at each of them (mean over layers; its argmax is the token's pathway). Tokens labelled by a
span of a mixed sample are told apart from the sample's default label by rendering it with each default:
a label that does not change with the default came from a span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..chat import Example, RenderOptions, render
from ..model.block import Routing
from ..model.losses import IGNORE
from ..model.transformer import PathwayLM
from ..records import Record


@dataclass
class _Item:
    example: Example
    kind: str
    span: list[bool]  # per token: its gate label came from a span


@dataclass
class KindScore:
    """Sums over one kind of record (gsm / narrative / mixed); ``summary`` turns them into metrics."""

    records: int = 0
    skipped: int = 0
    nll: float = 0.0
    tokens: int = 0
    correct: int = 0
    labelled: int = 0
    span_correct: int = 0
    span_labelled: int = 0
    layer_sum: torch.Tensor | None = None  # (L, P) summed gates over response tokens
    per_record: dict[str, float] = field(default_factory=dict)  # id -> mean NLL of its response tokens

    def summary(self, pathways: list[str], gates: bool) -> dict:
        out = {
            "records": self.records,
            "skipped": self.skipped,
            "tokens": self.tokens,
            "ppl": math.exp(self.nll / self.tokens) if self.tokens else None,
            "per_record": self.per_record,
        }
        if gates and self.layer_sum is not None and self.tokens:
            per_layer = self.layer_sum / self.tokens  # (L, P)
            out["gate_acc"] = self.correct / self.labelled if self.labelled else None
            out["gate_acc_spans"] = self.span_correct / self.span_labelled if self.span_labelled else None
            out["usage"] = {p: round(float(w), 4) for p, w in zip(pathways, per_layer.mean(0), strict=True)}
            out["per_layer"] = [[round(float(w), 4) for w in row] for row in per_layer]
        return out


def _items(
    records: dict[str, list[Record]],
    tokenizer,
    pathways: list[str],
    mixed_default: str,
    max_seq_len: int,
    scores: dict[str, KindScore],
) -> list[_Item]:
    cfg = RenderOptions(max_seq_len=max_seq_len, mixed_default=mixed_default)
    items = []
    for kind, recs in records.items():
        for r in recs:
            try:
                ex = render(r, tokenizer, pathways, cfg)
                span = [False] * len(ex.input_ids)
                if r.spans and len(pathways) > 1:
                    alt = next(p for p in pathways if p != mixed_default)
                    other = render(
                        r, tokenizer, pathways, RenderOptions(max_seq_len=max_seq_len, mixed_default=alt)
                    )
                    span = [a == b != IGNORE for a, b in zip(ex.gate_labels, other.gate_labels, strict=True)]
            except ValueError:  # nothing to score within max_seq_len, or a template mismatch
                scores[kind].skipped += 1
                continue
            scores[kind].records += 1
            items.append(_Item(ex, kind, span))
    return items


@torch.inference_mode()
def score(
    model: PathwayLM,
    tokenizer,
    records: dict[str, list[Record]],
    routing: Routing,
    gates: bool,
    mixed_default: str = "narrative",
    max_seq_len: int = 512,
    max_batch_tokens: int = 2048,
    pad_id: int = 0,
) -> dict[str, dict]:
    """{kind: {records, skipped, tokens, ppl[, gate_acc, gate_acc_spans, usage, per_layer]}}.

    ``gates``: also score the gate (only meaningful where the routing is learned: soft or top1)."""
    pathways = model.pathway_names
    if mixed_default not in pathways:
        mixed_default = pathways[-1]
    scores = {kind: KindScore() for kind in records}
    items = _items(records, tokenizer, pathways, mixed_default, max_seq_len, scores)
    items.sort(key=lambda it: len(it.example.input_ids))
    i = 0
    while i < len(items):
        T = len(items[i].example.input_ids)
        rows = max(1, max_batch_tokens // T)
        group = items[i : i + rows]
        i += len(group)
        T = max(len(it.example.input_ids) for it in group)
        B = len(group)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        gate_labels = torch.full((B, T), IGNORE, dtype=torch.long)
        span = torch.zeros(B, T, dtype=torch.bool)
        valid = torch.zeros(B, T, dtype=torch.bool)
        for b, it in enumerate(group):
            n = len(it.example.input_ids)
            ids[b, :n] = torch.tensor(it.example.input_ids)
            labels[b, :n] = torch.tensor(it.example.labels)
            gate_labels[b, :n] = torch.tensor(it.example.gate_labels)
            span[b, :n] = torch.tensor(it.span)
            valid[b, :n] = True
        out = model(ids, key_valid=valid, routing=routing, trace=gates)
        nll = F.cross_entropy(
            out.logits[:, :-1].float().transpose(1, 2), labels[:, 1:], ignore_index=IGNORE, reduction="none"
        )  # (B, T-1): token t+1 given the prefix
        target = labels[:, 1:] != IGNORE
        for b, it in enumerate(group):
            s = scores[it.kind]
            s.nll += float(nll[b][target[b]].sum())
            s.tokens += int(target[b].sum())
            if target[b].any():
                s.per_record[it.example.id] = float(nll[b][target[b]].mean())
            if not gates:
                continue
            resp = labels[b] != IGNORE  # response tokens (the gate at the token that is predicted)
            g = out.gates[b][resp].float()  # (n, L, P)
            per_token = g.mean(1)  # (n, P)
            s.layer_sum = g.sum(0) if s.layer_sum is None else s.layer_sum + g.sum(0)
            choice = per_token.argmax(-1)
            lab = gate_labels[b][resp]
            has = lab != IGNORE
            s.correct += int((choice[has] == lab[has]).sum())
            s.labelled += int(has.sum())
            sp = span[b][resp] & has
            s.span_correct += int((choice[sp] == lab[sp]).sum())
            s.span_labelled += int(sp.sum())
    return {kind: s.summary(pathways, gates) for kind, s in scores.items()}
