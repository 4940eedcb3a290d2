"""Multi-process training through torchrun: the process group (NCCL on CUDA, gloo on CPU), collectives
the loop needs, and a distributed class-balanced (CBGS) sampler.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain `simdistill train`
(no torchrun) is one process with rank 0. Plain shuffling uses torch's DistributedSampler; CBGS draws
the same class-balanced index list on every rank from (seed, epoch), pads it to a multiple of the
world size and gives rank r every W-th index from r, exactly as DistributedSampler shards.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from training.data.dataset import CameraDetectionDataset, CBGSSampler


@dataclass(frozen=True)
class DistContext:
    """rank / world_size / local_rank of this process; distributed: whether a process group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from e


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistContext()
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices are visible; "
                             f"set torchrun --nproc-per-node to at most the GPUs per machine")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local, True)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_true(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """Whether flag holds on every rank (one tiny all-reduce; no-op in one process)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def mean_over_ranks(ctx: DistContext, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average of each value over ranks (for logging); keys must agree across ranks."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """rank 0's obj on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class DistributedCBGSSampler(Sampler[int]):
    """This rank's share of the class-balanced (CBGS) index list of each epoch (set_epoch)."""

    def __init__(self, dataset: CameraDetectionDataset, num_replicas: int, rank: int, seed: int) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.cbgs = CBGSSampler(dataset, seed=seed, shuffle=True)
        self.num_replicas = num_replicas
        self.rank = rank
        self.num_samples = math.ceil(len(self.cbgs) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.cbgs.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.cbgs)
        if not indices:
            return iter(())
        while len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
