"""The curation config: one dataclass per step, in the order the pipeline runs them.

``configs/curate-*.yaml`` presets map 1:1 onto ``CurateConfig``; unknown keys are errors (qwythos.config).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError, to_dict

SCHEMAS = ("auto", "dolly", "ultrachat", "alpaca", "sharegpt", "openai", "gsm8k", "text")


@dataclass
class InputConfig:
    path: str = ""  # JSONL (.jsonl, .json, .jsonl.gz), Parquet or CSV
    schema: str = "auto"  # one of SCHEMAS; 'auto' detects it from the first rows
    source: str = ""  # name used in ids and the manifest (default: the file name without extensions)
    fallback: str = ""  # read this instead when `path` does not exist (the quickstart's placeholder set)
    generator: str = ""  # instead of a path: 'reasoning_gym:<dataset>' generated into the work folder
    size: int = 1000  # generator only: number of samples
    seed: int = 0  # generator only
    args: dict = field(default_factory=dict)  # generator only: its config, e.g. {min_animals: 2}
    holdout: float = 0.0  # fraction held out before curation, by meta.kind (curate/holdout.py); JSONL only
    holdout_seed: int = 0

    def __post_init__(self):
        if self.schema not in SCHEMAS:
            raise ConfigError(f"inputs: schema {self.schema!r} is not one of {list(SCHEMAS)}")
        if bool(self.path) == bool(self.generator):
            raise ConfigError("inputs: each input needs exactly one of `path` or `generator`")
        if self.generator and not self.generator.startswith("reasoning_gym:"):
            raise ConfigError(f"inputs: generator {self.generator!r}: use 'reasoning_gym:<dataset>'")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"inputs: holdout ({self.holdout}) must be a fraction in [0, 1), e.g. 0.2")
        if self.args and not self.generator:
            raise ConfigError(f"inputs: {self.path}: `args` configure a generator; this input reads a file")


@dataclass
class ReadConfig:
    chunk_size: int = 10_000  # records per unit of work; a finished unit is skipped when a run resumes
    max_record_bytes: int = 1_000_000  # a larger raw record is rejected as 'oversize'
    detect_rows: int = 50  # rows read to detect a file's schema

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ConfigError(f"read.chunk_size ({self.chunk_size}) must be >= 1")


@dataclass
class NormaliseConfig:
    fix_unicode: bool = True  # ftfy on non-ASCII text (mojibake, odd quotes), then NFC
    strip_calculator: bool = True  # drop GSM8K calculator annotations '<<2*3=6>>'


@dataclass
class QualityConfig:
    min_response_words: int = 1
    max_chars: int = 60_000  # whole conversation
    min_length_ratio: float = 0.0  # response words / prompt words (0 = off)
    max_length_ratio: float = 0.0  # (0 = off)
    max_repetition: float = 0.35  # share of the response's word 4-grams that repeat an earlier one
    refusals: bool = True  # drop 'As an AI language model, I cannot ...' and friends
    boilerplate: int = (
        0  # drop a response with this many boilerplate phrases or more (0: they only lower quality)
    )
    final_answer: Literal["strict", "flexible", "off"] = "flexible"  # for math-like reasoning samples
    reference_answer: bool = True  # when meta.answer exists, the response's final answer must match it
    language: Literal["en", "any"] = "en"
    min_english: float = 0.15  # share of words that are common English function words


@dataclass
class EmbedConfig:
    model: Literal["minilm", "hashing"] = "minilm"  # offline all-MiniLM-L6-v2, or hashed word/bigram counts
    max_tokens: int = 64  # MiniLM truncation (its cost grows with it; ~20 docs/s/core at 64 on this CPU)
    batch_size: int = 64
    dim: int = 256  # hashing only
    cache_dir: str = ""  # default: <out>/.work/embeddings


@dataclass
class LabelConfig:
    trust_source: bool = True  # keep a pathway (and spans) the input already carries
    priors: dict[str, str] = field(
        default_factory=lambda: {
            "gsm8k": "reasoning",
            "dolly:creative_writing": "narrative",
            "dolly:brainstorming": "narrative",
            "dolly:open_qa": "reasoning",
            "dolly:closed_qa": "reasoning",
            "dolly:general_qa": "reasoning",
            "dolly:classification": "reasoning",
            "dolly:information_extraction": "reasoning",
        }
    )  # '<schema>', '<schema>:<category>' or 'source:<name>' -> pathway
    prior_strength: float = 2.5  # log-odds a prior adds
    mixed_min_share: float = 0.2  # each pathway must cover this share of the response to make it 'mixed'
    embed_below: float = 0.8  # records whose rule confidence is below this go to the embedding classifier
    train_per_pathway: int = 64  # confident records per pathway that train the embedding classifier
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def __post_init__(self):
        for key, value in self.priors.items():
            if value not in ("reasoning", "narrative"):
                raise ConfigError(f"label.priors[{key!r}]: {value!r} must be 'reasoning' or 'narrative'")


@dataclass
class NearDedupConfig:
    enabled: bool = True
    engine: Literal["rensa", "datasketch"] = "rensa"  # datasketch is the slow reference
    threshold: float = 0.8  # estimated Jaccard at or above which a record is a near duplicate
    num_perm: int = 128
    bands: int = 0  # LSH bands of num_perm // bands rows (0 = the datasketch optimum for the threshold)
    shingle: int = 5  # words per shingle
    field: Literal["text", "prompt", "response"] = "text"
    seed: int = 42

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"dedup.near.threshold ({self.threshold}) must be in (0, 1]")
        if not 0 <= self.bands <= self.num_perm:
            raise ConfigError(f"dedup.near.bands ({self.bands}) must be in 0..num_perm ({self.num_perm})")


@dataclass
class SkeletonConfig:
    """Templated problems: records whose text is the same once numbers and capitalised words (names) are
    masked share a skeleton; keep at most ``max_per_skeleton`` of each. Off by default: for a small model
    many numeric instances of a template are the practice, not noise (THESIS.md); MinHash cannot see them."""

    enabled: bool = False
    max_per_skeleton: int = 1  # 1: skeleton dedup; more: a cap that balances templates
    field: Literal["text", "prompt", "response"] = "prompt"

    def __post_init__(self):
        if self.max_per_skeleton < 1:
            raise ConfigError(f"dedup.skeleton.max_per_skeleton ({self.max_per_skeleton}) must be >= 1")


@dataclass
class DedupConfig:
    exact_prompt: bool = True  # drop a record whose normalised prompt was already seen
    exact_response: bool = True  # ... or whose normalised response was
    near: NearDedupConfig = field(default_factory=NearDedupConfig)
    skeleton: SkeletonConfig = field(default_factory=SkeletonConfig)
    core: list[str] = field(default_factory=list)  # curated folders/files we already have: dedup against them


@dataclass
class DecontamConfig:
    evals: list[str] = field(default_factory=list)  # eval sets (any supported file); CLI --decontaminate
    n: int = 13  # word n-gram size


@dataclass
class DifficultyConfig:
    model: str = ""  # a model folder: its per-sample loss joins the difficulty score
    batch_size: int = 8
    max_tokens: int = 512


@dataclass
class Budget:
    samples: int | None = None  # None = unlimited
    tokens: int | None = None


@dataclass
class SelectConfig:
    budgets: dict[str, Budget] = field(default_factory=dict)  # per pathway; an absent pathway is unlimited
    difficulty_weight: float = 1.0  # score = quality * difficulty ** weight (0 = quality only)
    tau: float = 0.9  # skip a candidate whose embedding cosine to a kept one exceeds tau (>= 1: off)
    embed: EmbedConfig = field(default_factory=lambda: EmbedConfig(model="hashing"))


@dataclass
class CurriculumConfig:
    order: Literal["staged", "easy_to_hard", "none"] = "staged"
    stages: int = 3  # staged: difficulty tertiles (etc.), pathways interleaved inside a stage
    seed: int = 0

    def __post_init__(self):
        if self.stages < 1:
            raise ConfigError(f"curriculum.stages ({self.stages}) must be >= 1")


@dataclass
class OutputConfig:
    shard_size: int = 10_000
    plots: bool = True
    keep_work: bool = False  # keep <out>/.work (map units, embeddings) after a successful run


@dataclass
class ExecutorConfig:
    workers: int = 2  # processes (local) or CPUs (ray); 1 runs in this process
    ray_address: str = ""  # '' starts a local Ray instance with `workers` CPUs


@dataclass
class CurateConfig:
    inputs: list[InputConfig] = field(default_factory=list)
    tokenizer: str = ""  # HF tokenizer folder for token counts ('' = approximate: words + punctuation)
    read: ReadConfig = field(default_factory=ReadConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


def config_hash(cfg: CurateConfig, sections: tuple[str, ...] | None = None) -> str:
    """sha256 of the config (or some sections of it); the executor never changes the output: left out."""
    data = to_dict(cfg)
    data.pop("executor")
    if sections is not None:
        data = {k: data[k] for k in sections}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
