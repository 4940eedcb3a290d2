"""Helpers of the training-loop tests (not used by the package): a two-camera version of the small test
config saved as a preset YAML, training configs written from plain data, a one-off tiny world, and a key
frame of a dataroot as a core Frame (`load_frame`, formerly in the old demo)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simdistill_ros.core.config import DetectorConfig, GeometryConfig, save_detector_config
from simdistill_ros.core.types import CameraCalibration, Frame
from training.config import TrainConfig, load_train_config

CAMERAS = ("CAM_FRONT", "CAM_BACK")
WORLD = {"scenes": 2, "samples_per_scene": 3, "seed": 5, "image_size": (90, 160), "sweeps": 2}


def load_frame(dataroot: Path, version: str, index: int) -> tuple[Frame, np.ndarray, list[str], str]:
    """Frame (images + calibration) of the index-th key frame of the dataroot's val split (else train), with
    its ground truth (N x 9 boxes in the ego frame, class names) and sample token."""
    from training.data.dataset import read_image
    from training.data.nuscenes import build_infos, split_scene_names

    split = "val" if split_scene_names(dataroot, version, "val") else "train"
    infos = build_infos(dataroot, version, split)
    if not infos:
        raise ValueError(f"dataroot {dataroot} ({version}, split {split}) has no samples")
    info = infos[index % len(infos)]
    images, calibs = [], []
    for cam in info.cameras:
        rgb = read_image(cam.image_path)
        images.append(rgb)
        calibs.append(CameraCalibration(cam.name, cam.K, cam.cam_to_ego, rgb.shape[:2]))
    frame = Frame(tuple(images), tuple(calibs), stamp_ns=int(info.timestamp) * 1000)
    return frame, info.gt_boxes, list(info.gt_names), info.token


def two_camera(config: DetectorConfig) -> DetectorConfig:
    """Two cameras, and at most 30 boxes per sample (an untrained model fills every slot)."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, camera_names=CAMERAS),
                               postprocess=dataclasses.replace(config.postprocess, max_detections=30))


def any_geometry() -> GeometryConfig:
    """Any valid geometry (the CBGS test builds a dataset only for its class lists)."""
    from simdistill_ros.core.config import load_preset

    return load_preset("tiny").geometry


def train_config(folder: Path, detector: DetectorConfig, name: str = "train", **sections: dict[str, Any]) -> TrainConfig:
    """Write <folder>/<name>.yaml (and the model preset beside it) and load it back as a TrainConfig.
    sections override the test defaults section by section (schedule={...}, losses={...}, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    preset = folder / "model.yaml"
    save_detector_config(detector, preset)
    data: dict[str, Any] = {
        "model": "model.yaml",
        "data": {"workers": 0, "pin_memory": False, "cbgs": False},
        "optim": {"lr": 1.0e-3},
        "schedule": {"epochs": 1, "batch_size": 1, "accumulate": 1, "precision": "fp32", "eval_every": 0,
                     "log_every": 1, "max_steps_per_epoch": 1},
        "lidar": {"max_sweeps": 2, "pillar_channels": 8, "encoder_blocks": 1},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_train_config(path)


def config_path(folder: Path, name: str = "train") -> Path:
    return folder / f"{name}.yaml"
