"""Steps 2 and 3: exact dedup (prompt and response separately), the optional skeleton cap for templated
problems (numbers and names masked) and MinHash-LSH near dedup.

Both keep the first occurrence and name it as the evidence of a later duplicate. Either index can be seeded
with an existing curated core first, so new data is deduplicated against what we already have. Signatures
come from rensa (or datasketch, the slow reference) over the shared word n-gram hashes; banding and the
greedy keep-first check (candidate from any band, kept only if the estimated Jaccard is below the
threshold) are ours, so both engines get identical semantics.
"""

from __future__ import annotations

import functools

import numpy as np
import xxhash

from .config import NearDedupConfig
from .ngrams import ngram_hashes
from .normalise import dedup_key, skeleton


def text_hash(text: str, key=dedup_key) -> int:
    """64-bit hash of the dedup key of a text (0 for an empty text: never a duplicate)."""
    k = key(text)
    return xxhash.xxh3_64_intdigest(k.encode("utf-8", "surrogatepass")) if k else 0


def skeleton_hash(text: str) -> int:
    """64-bit hash of a text's skeleton (normalise.skeleton); 0 for an empty text."""
    return text_hash(text, skeleton)


class SkeletonCap:
    """Keep-first: at most ``cap`` records per skeleton hash; a later one names the skeleton's first."""

    def __init__(self, cap: int):
        self.cap, self.seen = cap, {}

    def check(self, rid: str, h: int) -> str | None:
        """None if kept (and counted), else the id of the skeleton's first record."""
        if not h:
            return None
        first, n = self.seen.get(h, (rid, 0))
        if n >= self.cap:
            return first
        self.seen[h] = (first, n + 1)
        return None


class ExactDedup:
    """Keep-first exact dedup on the normalised prompt and, separately, the normalised response."""

    def __init__(self, prompt: bool = True, response: bool = True):
        self.use = {"prompt": prompt, "response": response}
        self.seen: dict[str, dict[int, str]] = {"prompt": {}, "response": {}}

    def check(self, rid: str, prompt_hash: int, response_hash: int) -> tuple[str, str] | None:
        """None if new (and remember it), else (reason, id of the first occurrence)."""
        for part, h in (("prompt", prompt_hash), ("response", response_hash)):
            if self.use[part] and h and (first := self.seen[part].get(h)) is not None:
                return f"exact_dup_{part}", first
        for part, h in (("prompt", prompt_hash), ("response", response_hash)):
            if self.use[part] and h:
                self.seen[part][h] = rid
        return None


# ---------------------------------------------------------------- MinHash signatures


def signatures(texts: list[str], cfg: NearDedupConfig) -> np.ndarray:
    """MinHash signatures (N, num_perm) uint32 of word ``cfg.shingle``-gram sets."""
    grams, offsets, _ = ngram_hashes(texts, cfg.shingle)
    if cfg.engine == "rensa":
        from rensa import RMinHash

        empty = offsets[1:] == offsets[:-1]
        if empty.any():  # rensa needs at least one token per row: give empty docs a fixed one
            grams = np.insert(grams, offsets[:-1][empty], np.uint64(0))
            offsets = offsets + np.concatenate([[0], np.cumsum(empty)])
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(
            grams, offsets.astype(np.uint64), cfg.num_perm, cfg.seed
        )
        return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(texts), cfg.num_perm)
    from datasketch import MinHash

    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for d in range(len(texts)):
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=_low32)
        m.update_batch(grams[offsets[d] : offsets[d + 1]].tolist() or [0])
        out[d] = m.hashvalues.astype(np.uint32)
    return out


def _low32(x: int) -> int:
    return x & 0xFFFFFFFF


@functools.lru_cache
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, minimising false positives + false negatives around the
    threshold with equal weights (datasketch's MinHashLSH choice: (9, 13) for 0.8 and 128)."""
    xs = np.linspace(0, 1, 1001)
    below, above = xs < threshold, xs >= threshold
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1 - (1 - xs**r) ** b
            err = np.trapezoid(np.where(below, p, 0), xs) + np.trapezoid(np.where(above, 1 - p, 0), xs)
            if err < best_err:
                best, best_err = (b, r), err
    return best


# ---------------------------------------------------------------- LSH index with keep-first semantics


class NearDedup:
    """Greedy keep-first near dedup over an LSH index of kept signatures."""

    def __init__(self, cfg: NearDedupConfig):
        self.threshold = cfg.threshold
        self.bands, self.rows = (
            (cfg.bands, cfg.num_perm // cfg.bands)
            if cfg.bands
            else optimal_bands(cfg.threshold, cfg.num_perm)
        )
        self.buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self.kept: list[np.ndarray] = []
        self.keys: list[str] = []

    def band_hashes(self, sigs: np.ndarray) -> np.ndarray:
        """(N, bands) uint64: each band's rows folded into one hash."""
        parts = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        h = np.full(parts.shape[:2], np.uint64(14695981039346656037))
        for k in range(self.rows):
            h = (h ^ parts[:, :, k]) * np.uint64(1099511628211)
        return h

    def add(self, sigs: np.ndarray, keys: list[str]) -> list[tuple[str, float] | None]:
        """For each row in order: None if kept (and indexed), else (key of the kept match, est. Jaccard)."""
        out: list[tuple[str, float] | None] = []
        for sig, key, hs in zip(sigs, keys, self.band_hashes(sigs).tolist(), strict=True):
            match = self._match(sig, hs)
            out.append(match)
            if match is None:
                self._insert(sig, key, hs)
        return out

    def _match(self, sig: np.ndarray, hs: list[int]) -> tuple[str, float] | None:
        candidates: set[int] = set()
        for bucket, h in zip(self.buckets, hs, strict=True):
            hit = bucket.get(h)
            if hit is not None:
                candidates.update(hit if isinstance(hit, list) else (hit,))
        for c in sorted(candidates):  # earliest kept first: deterministic
            sim = float(np.count_nonzero(self.kept[c] == sig)) / len(sig)
            if sim >= self.threshold:
                return self.keys[c], sim
        return None

    def _insert(self, sig: np.ndarray, key: str, hs: list[int]) -> None:
        i = len(self.kept)
        self.kept.append(sig)
        self.keys.append(key)
        for bucket, h in zip(self.buckets, hs, strict=True):
            hit = bucket.get(h)
            if hit is None:
                bucket[h] = i
            elif isinstance(hit, list):
                hit.append(i)
            else:
                bucket[h] = [hit, i]
