"""Data-parallel training on PyTorch's own engine: launched by `torchrun`, each process
trains a replica (DistributedDataParallel: gloo on CPUs, NCCL on GPUs) on its slice of
every global batch; gradients are averaged across processes after each backward pass.

    torchrun --nproc-per-node 2 -m imgcls.cli train CONFIG            # one machine
    torchrun --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 \\
             --nproc-per-node 8 -m imgcls.cli train CONFIG            # each of 2 machines

`train.batch_size` is the global batch: every process draws the same shuffled,
augmented batch and takes its share, so N processes do the work of one with the same
batch size and learning rate (no scaling rule needed). Only rank 0 writes the run folder.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(device_type: str) -> World:
    """Join the process group torchrun describes in the environment (once); a single
    process gets the trivial world."""
    if not launched():
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world()


def world() -> World:
    if not dist.is_available() or not dist.is_initialized():
        return World()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    return World(dist.get_rank(), dist.get_world_size(), local)


def teardown() -> None:
    """Leave the process group, after collecting whatever still holds its communicators
    (a replica in a reference cycle), which would otherwise be freed after it."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier() -> None:
    if world().active:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not world().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) everywhere: each replica updated its own from
    its share of the last batch, and evaluation must see one model."""
    if world().active:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
