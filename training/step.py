"""One micro-batch of training, shared by the loop and the throughput benchmark: move the batch to the
device, build its view-transform plan, CenterPoint targets and (when enabled) LiDAR depth labels there,
run the frozen teacher under no_grad (student stage) and the objective under autocast; return the named,
weighted loss terms.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.view_plan import build_bev_pool_plan
from training.config import TrainConfig
from training.depth_targets import lidar_depth_bins
from training.objective import FrozenTeacher
from training.targets import build_targets, object_mask

DEVICE_KEYS = ("images", "K", "cam_to_ego", "img_aug", "bev_aug", "points", "num_points", "gt_boxes", "gt_labels")


def to_device(batch: dict[str, Any], device: torch.device, non_blocking: bool = False) -> dict[str, Tensor]:
    """The tensors of a collated batch on the device (non_blocking for pinned batches)."""
    return {k: batch[k].to(device, non_blocking=non_blocking) for k in DEVICE_KEYS}


def loss_terms(objective: Callable[..., dict[str, Tensor]], teacher_stage: bool, teacher: FrozenTeacher | None,
               batch: dict[str, Tensor], detector: DetectorConfig, config: TrainConfig,
               autocast: Callable[[], AbstractContextManager[Any]]) -> dict[str, Tensor]:
    """Loss terms of one device batch. objective: a TeacherObjective or StudentObjective, or its DDP wrapper."""
    g = detector.geometry
    K, cam_to_ego, img_aug, bev_aug = batch["K"], batch["cam_to_ego"], batch["img_aug"], batch["bev_aug"]
    points, num_points = batch["points"], batch["num_points"]
    plan = build_bev_pool_plan(g, K, cam_to_ego, img_aug, bev_aug)
    targets = build_targets(batch["gt_boxes"], batch["gt_labels"], detector.model.tasks, g, config.targets)
    losses = config.losses
    depth = lidar_depth_bins(points, num_points, K, cam_to_ego, img_aug, bev_aug, g) if losses.depth.active else None
    with autocast():
        if teacher_stage:
            return objective(batch["images"], plan, points, num_points, targets, depth)
        t_out = None if teacher is None else teacher(batch["images"], plan, points, num_points)
        mask = object_mask(targets) if t_out is not None and losses.cmd.active else None
        return objective(batch["images"], plan, targets, mask, t_out, depth)
