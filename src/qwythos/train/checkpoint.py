"""Atomic, pickle-free training checkpoints with exact resume.

A checkpoint folder holds the trainable weights and the optimiser's tensors (safetensors) and everything
else as JSON: optimiser hyper-parameters and step counts, scheduler step, RNG states, the data position.
It is written to a temp folder, every file fsync'ed, then renamed into place; the last N are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state()
    meta = {
        "python": _to_json(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[f"cuda{i}"] for i in range(torch.cuda.device_count())])
    random.setstate(_from_json(meta["python"]))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def _to_json(x):
    return [_to_json(v) for v in x] if isinstance(x, (tuple, list)) else x


def _from_json(x):
    return tuple(_from_json(v) for v in x) if isinstance(x, list) else x


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        state_meta[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.contiguous()
            else:
                state_meta[str(pid)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": state_meta}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, scalars in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(scalars)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    scheduler,
    position: dict,
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` atomically and prune all but the newest ``keep_last``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / "weights.safetensors")
        opt_tensors, opt_meta = optimizer_state(opt)
        save_file(opt_tensors or {"_empty": torch.zeros(0)}, tmp / "optimizer.safetensors")
        rng_tensors, rng_meta = rng_state()
        save_file(rng_tensors, tmp / "rng.safetensors")
        state = {
            "step": step,
            "position": position,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_meta,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        _fsync_tree(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = [
        p for p in sorted((Path(run_dir) / "checkpoints").glob(f"{PREFIX}*")) if (p / "state.json").is_file()
    ]
    return done[-1] if done else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(weights, optimiser tensors, state dict); RNG is restored by ``restore_rng``."""
    state = json.loads((path / "state.json").read_text())
    opt = {k: v for k, v in load_file(path / "optimizer.safetensors").items() if k != "_empty"}
    return load_file(path / "weights.safetensors"), opt, state


def restore_rng(path: Path, state: dict) -> None:
    set_rng_state(load_file(path / "rng.safetensors"), state["rng"])
