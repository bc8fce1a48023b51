"""The `qwythos synth` config: what to generate, which teacher answers, how candidates are checked and kept.

Maps 1:1 onto ``configs/synth*.yaml``; unknown keys are errors (``qwythos.config.from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TeacherConfig:
    kind: Literal["local", "openai"] = "local"
    # local: a Qwythos model folder or exported Mixtral; None = the embedded SmolLM2-135M (built once, cached)
    model_dir: str | None = None
    batch_size: int = 32  # local: prompts decoded together
    threads: int = 0  # local: torch threads (0 = leave torch's default)
    # local: weights' dtype; bfloat16 decodes a batch ~1.8x faster on CPUs with AVX512-BF16 (and GPUs)
    dtype: Literal["float32", "bfloat16"] = "float32"
    # openai: any OpenAI-compatible server; each falls back to an environment variable when unset
    base_url: str | None = None  # $QWYTHOS_TEACHER_BASE_URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # $QWYTHOS_TEACHER_MODEL
    api_key: str | None = None  # $QWYTHOS_TEACHER_API_KEY, then $OPENAI_API_KEY
    timeout_s: float = 60.0  # per request
    max_retries: int = 4  # on timeouts, connection errors, 408/409/429/5xx
    backoff_s: float = 1.0  # first retry delay; doubles each retry (Retry-After wins when sent)
    concurrency: int = 8  # requests in flight at once

    def __post_init__(self) -> None:
        for name in ("batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"teacher.{name} ({getattr(self, name)}) must be >= 1")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("teacher.timeout_s must be > 0, max_retries and backoff_s >= 0")


@dataclass
class SamplingConfig:
    temperature: float = 0.8  # narrative parts
    reasoning_temperature: float = 0.3  # reasoning parts: k different seeds, but close to greedy
    top_p: float = 1.0
    top_k: int = 50  # 0 = off; sent to OpenAI-compatible servers only when > 0 (vLLM, llama.cpp accept it)
    story_tokens: int = 200  # max new tokens of a story, scene or dialogue
    reply_tokens: int = 120  # ... of a role-play reply or a mixed sample's narrative part
    solution_tokens: int = 200  # ... of a step-by-step solution


@dataclass
class TasksConfig:
    """How many tasks of each kind; each becomes at most one record."""

    reasoning: int = 0  # problem -> step-by-step solution ending '#### N'
    narrative: int = 0  # story, scene or dialogue from genre x character x setting x constraint
    roleplay: int = 0  # multi-turn role-play with a character card
    mixed_story: int = 0  # a story in which a character works out a sum (reasoning span inside)
    mixed_gm: int = 0  # a game master checks the inventory, then narrates
    roleplay_turns: int = 2
    # reasoning problems: 'templates', a reasoning-gym dataset name (e.g. gsm_symbolic), or a JSONL file
    # of {"question", "answer"?} (no answer -> self-consistency majority decides)
    reasoning_source: str = "gsm_symbolic"
    # a mixed task's reasoning part: 'teacher' (k samples, verified) or 'worked' (the generator's own
    # step-by-step solution, verified the same way; for teachers too small to get the sums right)
    mixed_reasoning: str = "teacher"

    def __post_init__(self) -> None:
        for name in ("reasoning", "narrative", "roleplay", "mixed_story", "mixed_gm"):
            if getattr(self, name) < 0:
                raise ValueError(f"tasks.{name} ({getattr(self, name)}) must be >= 0")
        if self.mixed_reasoning not in ("teacher", "worked"):
            raise ValueError(f"tasks.mixed_reasoning ({self.mixed_reasoning!r}): use 'teacher' or 'worked'")
        if not 1 <= self.roleplay_turns <= 7:  # an opener + up to six distinct follow-ups (synth/seeds.py)
            raise ValueError(f"tasks.roleplay_turns ({self.roleplay_turns}) must be between 1 and 7")


@dataclass
class SelectConfig:
    n: int = 2  # best-of-n candidates per narrative part
    k: int = 4  # candidates per reasoning part: any verified one is kept; majority vote without reference
    min_agreement: float = 0.5  # self-consistency: the majority answer needs > this share and >= 2 votes
    extract: Literal["strict", "flexible"] = "flexible"  # answer after '####' only, or the last number too
    check_steps: bool = True  # reject a solution whose written arithmetic ('12 + 7 = 19') is false

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1:
            raise ValueError(f"select.n ({self.n}) and select.k ({self.k}) must be >= 1")


@dataclass
class ScoreConfig:
    """Cheap narrative filters (each failure is a reject reason) and the best-of-n score."""

    min_words: int = 40  # of a story; role-play replies and mixed narrative parts need half
    max_words: int = 400
    max_repetition: float = 0.15  # share of repeated 4-grams
    min_distinct2: float = 0.6  # distinct bigrams / bigrams within the text
    coherence: bool = True  # mean token loss of the reply under a reference model
    coherence_model: str | None = None  # None = the local teacher's model, or the embedded base
    max_loss: float = 3.0  # nats/token above which a reply is 'incoherent'
    judge: bool = False  # also ask the teacher for a 1-10 rubric score (one extra request per candidate)
    min_judge: float = 5.0


@dataclass
class SynthConfig:
    seed: int = 0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    cache: str | None = None  # SQLite request cache; None = <out>/cache.sqlite
    source: str = "qwythos-synth"  # the records' "source" field
    compress: bool = False  # write records.jsonl.gz / rejects.jsonl.gz (gzip, reproducible bytes)
