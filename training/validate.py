"""Evaluation of a model under training on a split: test-time batches -> raw heads -> core.postprocess
(decode, NMS) -> nuScenes results JSON (training.evaluate) -> the devkit's DetectionEval.

The student runs its deployable `forward` (camera only); the teacher also gets the LiDAR points. Boxes
are decoded exactly as the Detector decodes them, so these numbers are what a deployed checkpoint
scores on the same split.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.postprocess import decode, to_detections
from simdistill_ros.core.types import Detections
from simdistill_ros.core.view_plan import build_bev_pool_plan
from training.data.nuscenes import SampleInfo
from training.evaluate import evaluate_results, predictions_to_results, write_json_atomic
from training.teacher.model import Teacher


@torch.no_grad()
def predict(model: Student | Teacher, loader: DataLoader, config: DetectorConfig, device: torch.device,
            autocast: Callable[[], AbstractContextManager[Any]]) -> dict[str, Detections]:
    """Detections (ego frame) per sample token of every batch of the loader."""
    was_training = model.training
    model.eval()
    out: dict[str, Detections] = {}
    try:
        for batch in loader:
            images = batch["images"].to(device, non_blocking=True)
            plan = build_bev_pool_plan(config.geometry, batch["K"].to(device), batch["cam_to_ego"].to(device),
                                       batch["img_aug"].to(device), batch["bev_aug"].to(device))
            with autocast():
                if isinstance(model, Teacher):
                    heads = model(images, plan, batch["points"].to(device), batch["num_points"].to(device))
                else:
                    heads = model(images, plan.depth_index, plan.pixel_index, plan.cell_index)
            decoded = decode(tuple(h.float() for h in heads), config.model.tasks, config.geometry, config.postprocess)
            for token, boxes in zip(batch["tokens"], decoded):
                out[token] = to_detections(boxes, config.model.class_names)
    finally:
        model.train(was_training)
    return out


def evaluate_model(model: Student | Teacher, loader: DataLoader, infos: Sequence[SampleInfo], config: DetectorConfig,
                   device: torch.device, autocast: Callable[[], AbstractContextManager[Any]], dataroot: str | Path,
                   version: str, split: str, out_dir: Path) -> dict[str, Any]:
    """Predict the split, write out_dir/results.json and score it with the devkit into out_dir/metrics.
    Returns the metrics (mAP, NDS, mATE, ...)."""
    preds = predict(model, loader, config, device, autocast)
    results = predictions_to_results(preds, {info.token: info.ego_to_global for info in infos})
    results_path = write_json_atomic(results, out_dir / "results.json", force=True)
    return evaluate_results(dataroot, version, split, results_path, out_dir / "metrics", render_curves=False,
                            force=True)
