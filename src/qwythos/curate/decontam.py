"""Step 6, decontamination: word 13-gram overlap of a record's prompt or response with any evaluation text.

The index is a sorted array of the 64-bit n-gram hashes of every eval prompt and answer, with the eval
record each came from; lookups are one vectorised ``searchsorted`` per batch. A hit is kept as evidence:
the matched words (quoted from the record), the eval record and which field matched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..records import Record
from .ngrams import ngram_hashes, tokens

log = logging.getLogger(__name__)
_SHIFT = np.uint64(64 - 24)  # the prefilter: one bit per top-24-bit prefix of an indexed n-gram hash


@dataclass
class EvalIndex:
    n: int
    grams: np.ndarray  # (G,) uint64, sorted
    refs: np.ndarray  # (G,) int64 index into names
    names: list[str]  # eval record ids
    skipped: int = 0  # eval texts shorter than n words (not indexed)

    def __post_init__(self):
        self.filter = np.zeros(1 << 24, dtype=bool)
        self.filter[self.grams >> _SHIFT] = True

    @classmethod
    def build(cls, records: list[Record], n: int) -> EvalIndex:
        texts, owners = [], []
        for i, r in enumerate(records):
            for text in (r.prompt, r.response):
                if text.strip():
                    texts.append(text)
                    owners.append(i)
        long = [k for k, t in enumerate(texts) if len(tokens(t)) >= n]
        grams, offsets, _ = ngram_hashes([texts[k] for k in long], n)
        refs = np.repeat(np.asarray([owners[k] for k in long], dtype=np.int64), np.diff(offsets))
        order = np.argsort(grams, kind="stable")
        index = cls(n, grams[order], refs[order], [r.id for r in records], len(texts) - len(long))
        if index.skipped:
            log.warning(
                "decontamination: %d eval texts are shorter than %d words and are not indexed",
                index.skipped,
                n,
            )
        return index

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "grams.npy", self.grams)
        np.save(folder / "refs.npy", self.refs)
        (folder / "index.json").write_text(
            json.dumps({"n": self.n, "names": self.names, "skipped": self.skipped})
        )

    @classmethod
    def load(cls, folder: Path) -> EvalIndex:
        meta = json.loads((folder / "index.json").read_text())
        grams = np.load(folder / "grams.npy", allow_pickle=False)
        refs = np.load(folder / "refs.npy", allow_pickle=False)
        return cls(meta["n"], grams, refs, meta["names"], meta["skipped"])

    def find(self, texts: list[str]) -> list[dict | None]:
        """For each text: None, or evidence {"ngram", "eval"} of its first n-gram found in the index."""
        out: list[dict | None] = [None] * len(texts)
        if not len(self.grams) or not texts:
            return out
        grams, offsets, positions = ngram_hashes(texts, self.n)
        maybe = np.flatnonzero(self.filter[grams >> _SHIFT])  # cheap prefilter, then the exact lookup
        idx = np.minimum(np.searchsorted(self.grams, grams[maybe]), len(self.grams) - 1)
        found = self.grams[idx] == grams[maybe]
        hits, idx = maybe[found], idx[found]
        if not len(hits):
            return out
        doc_of = np.searchsorted(offsets, hits, side="right") - 1
        for h, k, d in zip(hits.tolist(), idx.tolist(), doc_of.tolist(), strict=True):
            if out[d] is None:
                matched = tokens(texts[d])[positions[h] : positions[h] + self.n]
                if len(matched) < self.n:  # a short text's single gram: not an n-gram match
                    continue
                out[d] = {
                    "ngram": b" ".join(matched).decode("utf-8", "surrogatepass"),
                    "eval": self.names[int(self.refs[k])],
                }
        return out


def contamination(index: EvalIndex, records: list[Record]) -> list[tuple[str, str] | None]:
    """For each record: None if clean, else (reason, evidence JSON); the prompt is checked first."""
    out: list[tuple[str, str] | None] = [None] * len(records)
    for part in ("prompt", "response"):
        found = index.find([getattr(r, part) for r in records])
        for i, ev in enumerate(found):
            if ev is not None and out[i] is None:
                out[i] = (f"contaminated_{part}", json.dumps({**ev, "field": part}, ensure_ascii=False))
    return out
