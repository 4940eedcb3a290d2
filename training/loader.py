"""Training and evaluation data loading: sample infos, datasets, samplers and DataLoaders.

JPEG decoding, augmentation and normalisation run in DataLoader worker processes (the dataset's
__getitem__); batches are pinned on CUDA; the view-transform plan, targets and depth labels are built
per batch on the training device by the loop, not here.

Reproducibility: each sample's augmentation is drawn from its own seed, a hash of (run seed, epoch,
sample index), so an epoch's batches are the same whatever the number of workers or processes and a
resumed run sees exactly the batches of an uninterrupted one. The sampler yields (epoch, index) keys;
`EpochSeeded` seeds torch's generator from them inside a `torch.random.fork_rng` block, which leaves the
caller's generator untouched (workers=0).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from simdistill_ros.core.config import DetectorConfig
from training.config import TrainConfig
from training.data.dataset import CameraDetectionDataset, collate
from training.data.nuscenes import SampleInfo, build_infos
from training.distributed import DistContext, DistributedCBGSSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed of (run seed, epoch, sample index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class EpochSeeded(Dataset):
    """Wraps a dataset; item (epoch, index) is dataset[index] drawn with sample_seed(seed, epoch, index)."""

    def __init__(self, dataset: CameraDetectionDataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]


class EpochKeys(Sampler[tuple[int, int]]):
    """(epoch, index) keys of an index sampler; set_epoch reaches the wrapped sampler too."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def load_split(dataroot: str | Path, config: TrainConfig, split: str, max_sweeps: int) -> list[SampleInfo]:
    """Sample infos of a split (boxes filtered by LiDAR points as configured; cached by build_infos)."""
    return build_infos(dataroot, config.data.version, split, max_sweeps=max_sweeps,
                       min_lidar_pts=config.data.min_lidar_pts)


def check_lidar_files(infos: Sequence[SampleInfo], max_sweeps: int, why: str) -> None:
    """FileNotFoundError naming how many and which LiDAR files are missing, when `why` needs LiDAR."""
    missing: list[Path] = []
    total = 0
    for info in infos:
        for p in (info.lidar_path, *[s.path for s in info.sweeps[:max_sweeps]]):
            total += 1
            if not p.is_file():
                missing.append(p)
    if missing:
        raise FileNotFoundError(f"{why} needs LiDAR, but {len(missing)} of {total} LiDAR files of the split are "
                                f"missing (e.g. {missing[0]}); download the LiDAR blobs (samples/LIDAR_TOP, "
                                f"sweeps/LIDAR_TOP) or train --stage baseline")


def select_cameras(infos: Sequence[SampleInfo], camera_names: Sequence[str]) -> list[SampleInfo]:
    """Infos holding only the model's cameras, in the model's order (a model may use a subset of the
    rig); ValueError naming the sample and the camera when one is missing."""
    out = []
    for info in infos:
        by_name = {c.name: c for c in info.cameras}
        missing = [n for n in camera_names if n not in by_name]
        if missing:
            raise ValueError(f"sample {info.token}: camera(s) {', '.join(missing)} of the model are not in the "
                             f"dataset (it has {', '.join(by_name)})")
        cams = tuple(by_name[n] for n in camera_names)
        out.append(dataclasses.replace(info, cameras=cams))
    return out


def make_dataset(infos: Sequence[SampleInfo], detector: DetectorConfig, config: TrainConfig, train: bool,
                 load_lidar: bool) -> CameraDetectionDataset:
    """Augmented (train) or test-time (eval) dataset with the head's class order."""
    augment = train and config.data.augment
    return CameraDetectionDataset(select_cameras(infos, detector.model.camera_names), detector.geometry,
                                  image_aug=config.data.image_aug if augment else None,
                                  bev_aug=config.data.bev_aug if augment else None,
                                  max_sweeps=config.lidar.max_sweeps, load_lidar=load_lidar,
                                  point_range=config.lidar.point_range, class_names=detector.model.class_names)


def make_train_loader(dataset: CameraDetectionDataset, config: TrainConfig, ctx: DistContext,
                      pin_memory: bool) -> tuple[DataLoader, EpochKeys]:
    """The training DataLoader (this rank's shard; CBGS or shuffled) and its epoch-aware sampler."""
    if config.data.cbgs:
        base: Sampler[int] = DistributedCBGSSampler(dataset, ctx.world_size, ctx.rank, config.seed)
    else:
        base = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                  seed=config.seed, drop_last=False)
    if len(base) < config.schedule.batch_size:  # type: ignore[arg-type]
        raise ValueError(f"the training split gives {len(base)} samples per process (CBGS {config.data.cbgs}), "  # type: ignore[arg-type]
                         f"fewer than schedule.batch_size {config.schedule.batch_size}")
    sampler = EpochKeys(base)
    workers = config.data.workers
    loader = DataLoader(EpochSeeded(dataset, config.seed), batch_size=config.schedule.batch_size, sampler=sampler,
                        num_workers=workers, collate_fn=collate, pin_memory=pin_memory, drop_last=True,
                        persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    return loader, sampler


def make_eval_loader(dataset: CameraDetectionDataset, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Sequential loader over a test-time dataset (seeded, so evaluation leaves the global RNG alone)."""
    keys = [(0, i) for i in range(len(dataset))]
    return DataLoader(EpochSeeded(dataset, 0), batch_size=batch_size, sampler=keys, num_workers=workers,  # type: ignore[arg-type]
                      collate_fn=collate, pin_memory=pin_memory, drop_last=False)
