"""The systems one report compares, all taken from one run folder (or one model folder).

    base            the hybrid with every LoRA B zeroed: exactly the base model (LoRA B = 0 adds nothing)
    dense_lora      RUN/baselines/dense_lora/model: one LoRA, no gate, same mixed data and token budget
    reasoning_only  the hybrid forced onto its reasoning pathway (Routing 'force')
    narrative_only  the hybrid forced onto its narrative pathway
    hybrid_soft     the hybrid, pathways blended per token by the learned gate
    hybrid_top1     the hybrid, only the gate's top pathway computed per token
A system that cannot be built (no dense baseline in the run, an exported Mixtral without its base, a
model without a 'reasoning' pathway) is reported as missing with the reason, never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..inference.engine import Engine
from ..model.block import LoRAPathways, Routing
from ..model.formats import NATIVE_CONFIG, load_model
from .config import SYSTEMS

log = logging.getLogger(__name__)


@dataclass
class Target:
    """What ``qwythos eval`` was pointed at."""

    kind: str  # run | model
    path: Path
    model_dir: Path
    dense_dir: Path | None = None  # the run's dense LoRA baseline, when it trained one
    dataset: str | None = None  # the run's training data (data.dataset)
    mixed_default: str = "narrative"  # the pathway of a mixed sample's text outside its spans


def resolve_target(path: str | Path) -> Target:
    """A run folder (config.yaml + model/) or a model folder (native or Mixtral); else a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder (qwythos train) or a model folder")
    if (path / "config.yaml").is_file() and (path / "model" / NATIVE_CONFIG).is_file():
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
        data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
        dense = path / "baselines" / "dense_lora" / "model"
        return Target(
            kind="run",
            path=path,
            model_dir=path / "model",
            dense_dir=dense if (dense / NATIVE_CONFIG).is_file() else None,
            dataset=data.get("dataset") or None,
            mixed_default=data.get("mixed_default", "narrative"),
        )
    if (path / NATIVE_CONFIG).is_file() or (path / "config.json").is_file():
        return Target(kind="model", path=path, model_dir=path)
    if (path / "config.yaml").is_file():
        raise ValueError(
            f"{path} has a config.yaml but no model/{NATIVE_CONFIG}: an unfinished run? "
            f"finish it with `qwythos train --resume --out {path}`"
        )
    raise ValueError(
        f"{path} is neither a training run (config.yaml + model/) nor a model folder ({NATIVE_CONFIG} or a "
        f"Mixtral config.json); pass a folder made by `qwythos train`, `qwythos init` or `qwythos export`"
    )


@dataclass
class System:
    name: str
    engine: Engine
    routing: Routing
    gated: bool  # the gate is learned here (soft/top1): gear metrics apply
    zero_lora: bool = False  # the base: LoRA B zeroed while this system runs

    @contextmanager
    def active(self) -> Iterator[System]:
        """While the system runs: for the base, the hybrid's LoRA B tensors are zero (restored after)."""
        if not self.zero_lora:
            yield self
            return
        saved = []
        with torch.no_grad():
            for layer in self.engine.model.layers:
                paths = layer.mlp.pathways
                saved.append((paths.lora_B_gate_up.clone(), paths.lora_B_down.clone()))
                paths.lora_B_gate_up.zero_()
                paths.lora_B_down.zero_()
        try:
            yield self
        finally:
            with torch.no_grad():
                for layer, (gu, d) in zip(self.engine.model.layers, saved, strict=True):
                    layer.mlp.pathways.lora_B_gate_up.copy_(gu)
                    layer.mlp.pathways.lora_B_down.copy_(d)


def build_systems(target: Target, names: list[str]) -> tuple[list[System], dict[str, str]]:
    """The systems asked for, in the canonical order, and {missing system: why}."""
    model, tokenizer, mode = load_model(target.model_dir)
    hybrid = Engine(model, tokenizer, mode)
    pathways = model.pathway_names
    systems, missing = [], {}
    for name in [s for s in SYSTEMS if s in names]:
        if name == "base":
            if isinstance(model.layers[0].mlp.pathways, LoRAPathways):
                systems.append(System(name, hybrid, Routing("force", force=0), False, zero_lora=True))
            else:
                missing[name] = (
                    "an exported Mixtral folder holds no separate base; evaluate the native folder"
                )
        elif name == "dense_lora":
            if target.dense_dir is None:
                missing[name] = (
                    "no dense LoRA baseline in this run (train with baseline.dense_lora=true)"
                    if target.kind == "run"
                    else "a model folder carries no dense baseline; evaluate the run folder"
                )
                continue
            dense, dtok, dmode = load_model(target.dense_dir)
            systems.append(System(name, Engine(dense, dtok, dmode), Routing(), False))
        elif name in ("reasoning_only", "narrative_only"):
            pathway = name.removesuffix("_only")
            if pathway not in pathways:
                missing[name] = f"the model has no {pathway!r} pathway (its pathways: {pathways})"
                continue
            systems.append(System(name, hybrid, Routing("force", force=pathways.index(pathway)), False))
        elif name in ("hybrid_soft", "hybrid_top1"):
            if len(pathways) < 2:
                missing[name] = f"a hybrid needs 2+ pathways; this model has {pathways}"
                continue
            systems.append(System(name, hybrid, Routing(name.removeprefix("hybrid_")), True))
    return systems, missing


def file_hashes(target: Target) -> dict[str, str]:
    """sha256 (16 hex) of the run config, the model's own files and the dense baseline's."""

    def sha(paths: list[Path]) -> str:
        h = hashlib.sha256()
        for p in sorted(paths):
            h.update(p.name.encode())
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
        return h.hexdigest()[:16]

    def model_files(folder: Path) -> list[Path]:
        return [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")]

    out = {"model": sha(model_files(target.model_dir))}
    if target.kind == "run":
        out["run_config"] = sha([target.path / "config.yaml"])
        if (target.path / "data.json").is_file():
            out["run_data"] = sha([target.path / "data.json"])
    if target.dense_dir is not None:
        out["dense_lora"] = sha(model_files(target.dense_dir))
    return out
