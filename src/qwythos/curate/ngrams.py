"""Word n-gram hashes: the one primitive under near dedup (MinHash shingles) and decontamination (13-grams).

Text -> lower-cased words (punctuation becomes a space) -> 64-bit word hashes (rensa's FxHash, the same in
every process) -> n-gram hashes combined in numpy over a whole batch at once. Every n-gram keeps its
document and word position, so a match can quote the words it matched as evidence.
"""

from __future__ import annotations

import string

import numpy as np

_PUNCT = str.maketrans({c: " " for c in string.punctuation + "\u201c\u201d\u2018\u2019\u2014\u2013\u2026"})
_MUL = np.uint64(1099511628211)  # FNV prime: g = (g * P) ^ h_next


def words(text: str) -> list[str]:
    return text.lower().translate(_PUNCT).split()


def word_hashes(docs: list[list[str]]) -> list[list[int]]:
    from rensa import RMinHash

    return RMinHash.hash_token_sets(docs) if docs else []


def ngram_hashes(docs: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grams (G,) uint64, offsets (D+1,) document d owns grams[offsets[d]:offsets[d+1]], positions (G,)).

    A document shorter than n words (but not empty) gets one gram of all its words."""
    hashes = word_hashes(docs)
    lens = np.fromiter((len(h) for h in hashes), dtype=np.int64, count=len(hashes))
    flat = np.fromiter((x for h in hashes for x in h), dtype=np.uint64, count=int(lens.sum()))
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    counts = np.where(lens >= n, lens - n + 1, (lens > 0).astype(np.int64))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # position of each gram inside its document, and its start in `flat`
    doc_of = np.repeat(np.arange(len(docs)), counts)
    positions = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], counts)
    begin = starts[doc_of] + positions
    width = np.minimum(lens[doc_of], n)
    padded = np.concatenate([flat, np.zeros(n, dtype=np.uint64)])
    grams = padded[begin].copy()
    for k in range(1, n):
        take = k < width
        grams[take] = (grams[take] * _MUL) ^ padded[begin[take] + k]
    return grams, offsets, positions


def quote(text: str, position: int, n: int) -> str:
    """The n words of ``text`` starting at word ``position`` (a match's evidence)."""
    return " ".join(words(text)[position : position + n])
