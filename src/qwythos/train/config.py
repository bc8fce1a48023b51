"""What a training run is, as data: model, data, stages, optimiser, losses, checkpoints, runtime.

One YAML per run (presets in configs/), dotted CLI overrides on top; the resolved config is saved in the
run folder. Stages follow branch-train-mix: each pathway on its own slice, then the gate on the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..chat import RenderOptions
from ..model.config import DEFAULT_PATHWAYS
from ..model.losses import LossConfig

STAGE_KINDS = ("branch", "mix", "joint")


@dataclass
class ModelSection:
    base: str | None = None  # HF folder, .gguf, or None for the embedded SmolLM2-135M
    init_from: str | None = None  # start from an existing native model folder instead of a fresh one
    pathway_sources: dict[str, str] = field(
        default_factory=dict
    )  # {pathway: model folder} to combine branches
    pathways: list[str] = field(default_factory=lambda: list(DEFAULT_PATHWAYS))
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    router_init: str = "prompts"  # zero | random | prompts (from a few records of each pathway)


@dataclass
class DataSection(RenderOptions):  # + max_seq_len, label_prompt, mixed_default: how a record is rendered
    dataset: str = ""  # a curated dataset folder (qwythos curate) or a JSONL file of records
    pack: bool = True  # pack samples into max_seq_len rows (no attention across samples)
    shuffle: bool = False  # False keeps the curated curriculum order
    limit: int = 0  # use only the first N records (0 = all)


@dataclass
class StageConfig:
    name: str
    kind: str  # branch | mix | joint
    pathway: str | None = None  # branch: the pathway trained (routing forced to it)
    epochs: float = 1.0
    max_steps: int = 0  # > 0 caps the stage's optimiser steps
    max_tokens: int = 0  # > 0 caps the stage's input tokens (a token budget)
    lr: float = 2e-4  # LoRA learning rate (branch/joint)
    router_lr: float = 1e-3  # router learning rate (mix/joint)
    lora_lr: float = 0.0  # mix: 0 keeps the pathway LoRAs frozen; > 0 unfreezes them at this rate
    anneal_to: float = 1.0  # mix/joint: final gate softmax temperature (< 1 anneals toward top-1)

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage {self.name!r}: kind {self.kind!r} must be one of {STAGE_KINDS}")
        if self.kind == "branch" and not self.pathway:
            raise ValueError(f"stage {self.name!r}: a branch stage needs pathway: <name>")
        if self.kind != "branch" and self.pathway:
            raise ValueError(f"stage {self.name!r}: only branch stages take a pathway")
        if self.epochs <= 0 and not (self.max_steps or self.max_tokens):
            raise ValueError(f"stage {self.name!r}: epochs must be > 0 (or set max_steps / max_tokens)")
        if not 0 < self.anneal_to <= 1:
            raise ValueError(f"stage {self.name!r}: anneal_to must be in (0, 1]")


def default_stages() -> list[StageConfig]:
    return [
        StageConfig("branch-reasoning", "branch", pathway="reasoning"),
        StageConfig("branch-narrative", "branch", pathway="narrative"),
        StageConfig("mix", "mix"),
    ]


@dataclass
class OptimSection:
    batch_size: int = 4  # rows per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimiser step
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class CheckpointSection:
    every: int = 50  # optimiser steps between checkpoints (and at the end of every stage)
    keep_last: int = 2


@dataclass
class RoundsSection:
    """Active learning: after the stages, K rounds that score the pool with the current model and train
    on the next selection."""

    count: int = 0
    per_round: int = 64  # at most this many records per round
    budgets: dict[str, dict[str, int]] = field(default_factory=dict)  # {pathway: {samples, tokens}} per round
    stage: StageConfig = field(default_factory=lambda: StageConfig("round", "joint", lr=1e-4))


@dataclass
class BaselineSection:
    dense_lora: bool = False  # also train a single-LoRA (P=1) model on the same mixed data and token budget


@dataclass
class RuntimeSection:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    gradient_checkpointing: bool = False
    log_every: int = 1
    tensorboard: bool = False
    fsdp: bool = False  # shard the model with FSDP (CUDA); DDP otherwise when launched with torchrun
    num_threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    stages: list[StageConfig] = field(default_factory=default_stages)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for s in self.stages:
            if s.pathway and s.pathway not in self.model.pathways:
                raise ValueError(
                    f"stage {s.name!r}: pathway {s.pathway!r} is not in model.pathways {self.model.pathways}"
                )
        if self.data.mixed_default not in self.model.pathways:
            raise ValueError(f"data.mixed_default {self.data.mixed_default!r} is not in model.pathways")
