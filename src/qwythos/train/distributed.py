"""Plain torch.distributed: works under `torchrun` and `accelerate launch` (they set RANK/WORLD_SIZE).

gloo on CPU, nccl on CUDA; DDP by default, FSDP (CUDA) when asked. Rank 0 alone logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(device: str = "auto") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("runtime.device=cuda but no CUDA device is visible; use runtime.device=cpu")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def wrap(model: torch.nn.Module, d: Dist, fsdp: bool) -> torch.nn.Module:
    """DDP (or FSDP on CUDA) around the model for one stage; the bare model when single-process."""
    if d.world == 1:
        return model
    if fsdp:
        if d.device.type != "cuda":
            raise ValueError("runtime.fsdp needs CUDA devices; use DDP (the default) on CPU")
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        from ..model.transformer import DecoderLayer

        return FullyShardedDataParallel(
            model, use_orig_params=True, device_id=d.device, auto_wrap_policy=ModuleWrapPolicy({DecoderLayer})
        )
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
