"""Word n-gram hashes: the one primitive under near dedup (MinHash shingles) and decontamination (13-grams).

Text -> lower-cased words (punctuation and Unicode spaces become a space; a bytes translate table does the
ASCII part) -> 64-bit word hashes computed in numpy straight from the bytes (the same in every process)
-> n-gram hashes folded over a whole batch at once. Every n-gram keeps its document and word position, so
a match can quote the words it matched as evidence.
"""

from __future__ import annotations

import string

import numpy as np

_ASCII_PUNCT = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
_UNICODE_PUNCT = str.maketrans(
    {
        c: " "
        for c in "\u201c\u201d\u2018\u2019\u2014\u2013\u2026\u00a0\u2009\u200a\u202f\u3000\u2028\u2029\u0085"
    }
)
_MUL = np.uint64(1099511628211)  # FNV prime: g = (g * P) ^ h_next


def tokens(text: str) -> list[bytes]:
    """Lower-cased words as UTF-8 bytes: the words that get hashed."""
    return tokens_bytes(text).split()


def words(text: str) -> list[str]:
    """The same words as text (for evidence and display)."""
    return [w.decode("utf-8", "surrogatepass") for w in tokens(text)]


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True  # what bytes.split() splits on
_P = 0x100000001B3
_POWERS = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]  # P^k and P^-k mod 2^64, grown on demand


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    if len(_POWERS[0]) < length + 1:
        n = max(length + 1, 2 * len(_POWERS[0]))
        for i, base in enumerate((_P, pow(_P, -1, 1 << 64))):
            a = np.full(n, np.uint64(base))
            a[0] = 1
            _POWERS[i] = np.cumprod(a)
    return _POWERS[0], _POWERS[1]


def word_hashes(texts: list[str], batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (W,) uint64 of every word of every text, in order; words per text (D,)).

    Vectorised over the bytes of a batch: a polynomial hash of each word (prefix sums of b_k * P^k, so
    word [s, e) is (C[e] - C[s]) * P^-s mod 2^64), then a xorshift-multiply finaliser. The words are
    exactly ``tokens(text)``; no Python object is made per word."""
    out_h, out_n = [], []
    for lo in range(0, len(texts), batch):
        enc = [tokens_bytes(t) for t in texts[lo : lo + batch]]
        sizes = np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)) + 1
        b = np.frombuffer(b"\n".join(enc) + b"\n", dtype=np.uint8)
        edge = np.diff(_WHITESPACE[b].view(np.int8), prepend=np.int8(1))
        starts, ends = np.flatnonzero(edge == -1), np.flatnonzero(edge == 1)
        pw, ipw = _powers(len(b))
        c = np.zeros(len(b) + 1, dtype=np.uint64)
        np.cumsum(b * pw[: len(b)], out=c[1:])
        h = (c[ends] - c[starts]) * ipw[starts]
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out_h.append(h)
        out_n.append(np.bincount(np.searchsorted(first, starts, side="right") - 1, minlength=len(enc)))
    if not out_h:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_h), np.concatenate(out_n).astype(np.int64)


def tokens_bytes(text: str) -> bytes:
    if not text.isascii():
        text = text.translate(_UNICODE_PUNCT)
    return text.lower().encode("utf-8", "surrogatepass").translate(_ASCII_PUNCT)


def ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grams (G,) uint64, offsets (D+1,) text d owns grams[offsets[d]:offsets[d+1]], positions (G,)).

    A gram's position is the index of its first word in ``tokens(text)``. A text shorter than n words (but
    not empty) gets one gram of all its words."""
    flat, lens = word_hashes(texts)
    total = len(flat)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    counts = np.where(lens >= n, lens - n + 1, (lens > 0).astype(np.int64))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    positions = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], counts)
    # fold every window of n consecutive words of the flat array (contiguous slices), then keep the
    # windows that start inside one text
    span = max(0, total - n + 1)
    rolled = flat[:span].copy()
    for k in range(1, n):
        rolled *= _MUL
        rolled ^= flat[k : span + k]
    grams = np.zeros(int(offsets[-1]), dtype=np.uint64)
    long = lens >= n
    sel = np.repeat(long, counts)
    grams[sel] = rolled[np.repeat(starts[long], counts[long]) + positions[sel]]
    for d in np.flatnonzero((lens > 0) & ~long):  # short texts: one gram of all their words
        g = flat[starts[d] : starts[d] + 1].copy()  # a 1-element array: wraps without a warning
        for k in range(1, int(lens[d])):
            g = (g * _MUL) ^ flat[starts[d] + k : starts[d] + k + 1]
        grams[offsets[d]] = g[0]
    return grams, offsets, positions
