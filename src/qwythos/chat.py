"""One record -> the tokens a model sees, the ones it learns, and the pathway each token belongs to.

Rendering uses the model's own chat template; each message's content is located in the rendered text and
tokens are labelled through the tokenizer's offset mapping: assistant content (plus the end-of-turn token
after it) is supervised, everything else is masked. Gate labels come from the sample's pathway or, for
mixed samples, from its character spans. Training learns from these rows and the evaluation scores the very
same rows (teacher-forced perplexity and gate accuracy), so the two can never render a record differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model.losses import IGNORE
from .records import Record


@dataclass
class RenderOptions:
    max_seq_len: int = 512
    label_prompt: bool = True  # gate labels on prompt tokens of single-pathway samples too
    mixed_default: str = "narrative"  # pathway of a mixed sample's text outside its spans


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


def render(record: Record, tokenizer, pathways: list[str], cfg: RenderOptions) -> Example:
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
