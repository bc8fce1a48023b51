"""What an evaluation is, as data: which systems, which tasks and how big, how generation is batched.

`qwythos eval RUN --out DIR [--limit N] [key.path=value ...]` fills an ``EvalConfig`` from its defaults and
dotted overrides (e.g. ``gsm.fewshot=3 judge.base_url=http://127.0.0.1:8001/v1``); the resolved config is
saved in ``results.json``. The defaults are sized so that a quickstart run evaluates in minutes on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError

SYSTEMS = ("base", "dense_lora", "reasoning_only", "narrative_only", "hybrid_soft", "hybrid_top1")
HYBRID = ("hybrid_soft", "hybrid_top1")  # the systems whose gate is learned (gear metrics apply)


@dataclass
class GsmSection:
    n: int = 16  # held-out reasoning-gym problems
    seed: int = (
        4242  # reasoning-gym seed; further from the training data's than its size (the quickstart uses 0)
    )
    generator: str = "gsm_symbolic"  # a reasoning-gym dataset; worked solutions as in curation (qwythos.gym)
    args: dict = field(default_factory=dict)  # its config, as the training input's `args`
    fewshot: int = 0  # worked examples shown before each question (as earlier chat turns)
    file: str = ""  # also score a user file in GSM8K schema (JSONL/JSON rows with question, answer)
    max_new_tokens: int = 160


@dataclass
class NarrativeSection:
    prompts: int = 8  # story/dialogue prompts generated for the diversity metrics
    samples_per_prompt: int = 1  # stories sampled per prompt, each seeded on its own
    mixed_prompts: int = 4  # story-with-a-sum prompts (answer checked, gear switches counted)
    max_new_tokens: int = 96
    temperature: float = 0.8  # sampled, as stories are; seeded so a rerun reproduces the texts
    top_p: float = 0.95
    seed: int = 0
    source: str = "auto"  # narrative/mixed records (JSONL[.gz]); auto = data/seed, else the placeholder
    heldout: int = 24  # held-out records scored by perplexity and gate accuracy (per kind)
    min_heldout: int = 4  # fewer held-out source records than this: use the embedded held-out texts
    max_seq_len: int = 512  # teacher-forced scoring truncates records to this many tokens


@dataclass
class JudgeSection:
    """Optional LLM-judge rubric through any OpenAI-compatible endpoint (off while base_url is empty)."""

    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1
    model: str = ""
    api_key_env: str = "QWYTHOS_JUDGE_API_KEY"  # the key is read from this environment variable
    timeout: float = 60.0
    max_samples: int = 8  # narrative generations judged per system
    concurrency: int = 4


@dataclass
class ConsistencySection:
    enabled: bool = True
    probes: int = 8  # persona-fact and world-state questions asked along the scripted conversation
    context_tokens: int = 768  # plain chat: system prompt + the latest turns that fit, then the probe
    max_new_tokens: int = 24
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    engine: bool = True  # also through the dialogue engine (gated systems; the same budget and probes)


@dataclass
class RobustnessSection:
    enabled: bool = True
    per_category: int = 1  # prompts per category (injection, gibberish, long, languages, contradiction)
    max_new_tokens: int = 32
    long_prompt_tokens: int = 2048  # context the extreme-length prompt is cut to (0 = the model's own: 8k
    # tokens on SmolLM2 cost ~1 min of prefill per system on CPU)
    systems: list[str] = field(default_factory=lambda: list(HYBRID))


@dataclass
class RuntimeSection:
    batch_size: int = 16  # requests decoded together
    max_batch_tokens: int = 6144  # prefill budget: rows x longest prompt in a batch
    threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass
class EvalConfig:
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    limit: int = 0  # > 0 caps every task's item count (--limit)
    gsm: GsmSection = field(default_factory=GsmSection)
    narrative: NarrativeSection = field(default_factory=NarrativeSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    consistency: ConsistencySection = field(default_factory=ConsistencySection)
    robustness: RobustnessSection = field(default_factory=RobustnessSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    def __post_init__(self) -> None:
        for where, names in (
            ("systems", self.systems),
            ("consistency.systems", self.consistency.systems),
            ("robustness.systems", self.robustness.systems),
        ):
            unknown = sorted(set(names) - set(SYSTEMS))
            if unknown:
                raise ConfigError(f"{where}: unknown system(s) {unknown}; valid: {list(SYSTEMS)}")
        if self.limit < 0:
            raise ConfigError(f"limit ({self.limit}) must be >= 0 (0 = no limit)")
        if self.gsm.fewshot < 0:
            raise ConfigError(f"gsm.fewshot ({self.gsm.fewshot}) must be >= 0")
        if not 1 <= self.narrative.samples_per_prompt <= 64:
            raise ConfigError(
                f"narrative.samples_per_prompt ({self.narrative.samples_per_prompt}) must be in [1, 64]"
            )
        if self.judge.base_url and not self.judge.model:
            raise ConfigError("judge.base_url is set but judge.model is empty; name the judge model")

    def size(self, n: int) -> int:
        """A task's item count under --limit."""
        return min(n, self.limit) if self.limit else n
