"""Teacher checkpoints: the teacher's weights with its DetectorConfig (geometry, shapes, classes) and
LidarConfig in one file, written atomically and read with `torch.load(weights_only=True)`; and the
check that a teacher fits a student config (same grids, shapes and classes: every distilled tensor
must have the same meaning on both sides).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from simdistill_ros.core.checkpoint import load_state_into, read_payload
from simdistill_ros.core.config import DetectorConfig, config_from_dict, config_to_dict
from training.config import LidarConfig
from training.fsutil import atomic_file
from training.teacher.model import Teacher

FORMAT = "simdistill_ros.teacher"
FORMAT_VERSION = 1
# model fields a student may set freely (the GCM exists only in the student)
STUDENT_ONLY_FIELDS = ("gcm",)


def save_teacher(path: str | os.PathLike[str], teacher: Teacher, config: DetectorConfig,
                 metadata: dict[str, Any] | None = None, force: bool = True) -> Path:
    """Write the teacher's weights, configs and metadata (plain data) to `path` atomically."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(config),
        "lidar": config_to_dict(teacher.lidar_config),
        "class_names": list(config.model.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in teacher.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    with atomic_file(path, force=force) as f:
        torch.save(payload, f)
    return Path(path)


def load_teacher(path: str | os.PathLike[str]) -> tuple[Teacher, DetectorConfig, dict[str, Any]]:
    """Build the teacher of a checkpoint (CPU, weights loaded); errors name the file and what is wrong."""
    path = Path(path)
    payload = read_payload(path, "teacher checkpoint", "teacher", FORMAT, FORMAT_VERSION,
                           "; train one with `simdistill train --stage teacher`")
    try:
        config = config_from_dict(DetectorConfig, payload["config"])
        lidar = config_from_dict(LidarConfig, payload["lidar"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"teacher checkpoint {path}: {e}") from e
    teacher = Teacher(config.model, config.geometry, lidar)
    load_state_into(teacher, payload.get("state_dict", {}), f"teacher checkpoint {path}")
    return teacher, config, dict(payload.get("metadata", {}))


def config_differences(teacher: DetectorConfig, student: DetectorConfig) -> list[str]:
    """Dotted names and values of the geometry and model fields where teacher and student differ."""
    diffs: list[str] = []
    for section in ("geometry", "model"):
        a, b = getattr(teacher, section), getattr(student, section)
        for f in dataclasses.fields(a):
            if section == "model" and f.name in STUDENT_ONLY_FIELDS:
                continue
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                if f.name == "tasks":
                    va = [list(t.class_names) for t in va]
                    vb = [list(t.class_names) for t in vb]
                diffs.append(f"{section}.{f.name}: teacher {va}, student {vb}")
    return diffs


def check_teacher_fits(path: str | os.PathLike[str], teacher: DetectorConfig, student: DetectorConfig) -> None:
    """ValueError naming every differing field when the teacher's geometry, shapes or classes differ."""
    diffs = config_differences(teacher, student)
    if diffs:
        raise ValueError(f"teacher checkpoint {path} does not match the student config "
                         f"({len(diffs)} field(s)): " + "; ".join(diffs))
