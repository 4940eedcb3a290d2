"""The three training stages and how each builds its model (method.md sections 4-7):

- teacher:  Teacher (camera + LiDAR), detection loss; its image encoder may start from ImageNet weights.
- student:  Student distilled from a trained, frozen teacher (IMD, CMD, MMD-F, MMD-P); its image encoder
            starts from the teacher's and trains at optim.encoder_lr_mult (0.1) of the lr (defect 5).
- baseline: the same Student, detection loss only (the camera-only baseline); with --teacher its image
            encoder starts from the teacher's exactly as the student's does, so a baseline/student pair
            differs only in the distillation terms.

Any image encoder that starts from trained weights (the teacher's or ImageNet's) trains at
encoder_lr_mult; one trained from scratch at the full lr. `gcm: false` zeroes the GCM's output projection
and freezes the GCM (S_l = S_a exactly); a disabled CMD freezes the CMD projection (it would get no
gradient). Frozen parameters are left out of the optimiser, so DDP needs no unused-parameter search.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from simdistill_ros.core.config import DetectorConfig, config_to_dict
from simdistill_ros.core.model.backbone import load_torchvision_weights
from simdistill_ros.core.model.student import Student
from training.config import TrainConfig
from training.objective import FrozenTeacher, StudentObjective, TeacherObjective
from training.run_state import dict_differences
from training.teacher.checkpoint import check_teacher_fits, load_teacher
from training.teacher.model import Teacher

STAGES = ("teacher", "student", "baseline")


@dataclass
class StageSetup:
    """The trained model, its objective (what DDP wraps), the frozen teacher (student stage), the
    encoder's lr factor and whether batches must carry LiDAR points."""

    model: Student | Teacher
    objective: TeacherObjective | StudentObjective
    teacher: FrozenTeacher | None
    encoder_lr_mult: float
    needs_lidar: bool
    encoder_init: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a torchvision-format ResNet ImageNet state dict (a file the user downloaded) into backbone."""
    if not path.is_file():
        raise FileNotFoundError(f"--backbone-weights {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise several types
        raise ValueError(f"--backbone-weights {path} is not a readable state dict: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--backbone-weights {path}: expected a mapping of parameter names to tensors")
    try:
        load_torchvision_weights(backbone, state)  # type: ignore[arg-type]
    except ValueError as e:
        raise ValueError(f"--backbone-weights {path}: {e}") from e


def disable_gcm(student: Student) -> None:
    """Ablate the GCM: zero its output projection (DA(S_a) = 0, so S_l = S_a) and freeze it."""
    with torch.no_grad():
        student.gcm.output_proj.weight.zero_()
        student.gcm.output_proj.bias.zero_()
    student.gcm.requires_grad_(False)


def init_encoder_from_teacher(student: Student, teacher: Teacher) -> None:
    """Copy the teacher's backbone and neck (same module classes) into the student's."""
    student.backbone.load_state_dict(teacher.backbone.state_dict())
    student.neck.load_state_dict(teacher.neck.state_dict())


def build_stage(stage: str, config: TrainConfig, detector: DetectorConfig, teacher_path: Path | None,
                backbone_weights: Path | None) -> StageSetup:
    """Models and objective of a stage, on CPU, initialised (seed the RNG before calling)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    mult = config.optim.encoder_lr_mult
    if stage == "teacher":
        if teacher_path is not None:
            raise ValueError("--teacher is for the student and baseline stages")
        teacher = Teacher(detector.model, detector.geometry, config.lidar)
        init = "random"
        if backbone_weights is not None:
            load_backbone_weights(teacher.backbone, backbone_weights)
            init = f"imagenet:{backbone_weights.name}"
        return StageSetup(teacher, TeacherObjective(teacher, config.losses), None, mult if backbone_weights else 1.0,
                          True, init)

    if stage == "student" and teacher_path is None:
        raise ValueError("--stage student needs --teacher CKPT (a checkpoint of --stage teacher)")
    student = Student(detector.model, detector.geometry)
    frozen: FrozenTeacher | None = None
    init = "random"
    if teacher_path is not None:
        if backbone_weights is not None:
            raise ValueError("--backbone-weights and --teacher both initialise the image encoder; the student's "
                             "comes from the teacher (pass --backbone-weights when training the teacher)")
        teacher, teacher_cfg, _ = load_teacher(teacher_path)
        check_teacher_fits(teacher_path, teacher_cfg, detector)
        if stage == "student" and teacher.lidar_config != config.lidar:
            diffs = dict_differences(config_to_dict(teacher.lidar_config), config_to_dict(config.lidar), "lidar")
            raise ValueError(f"teacher checkpoint {teacher_path} was trained on other LiDAR input than this "
                             f"config loads for it: " + "; ".join(diffs) + " (teacher -> config)")
        init_encoder_from_teacher(student, teacher)
        init = f"teacher:{teacher_path.name}"
        if stage == "student":
            frozen = FrozenTeacher(teacher)
    elif backbone_weights is not None:
        load_backbone_weights(student.backbone, backbone_weights)
        init = f"imagenet:{backbone_weights.name}"
    if not config.gcm:
        disable_gcm(student)
    if stage == "baseline" or not config.losses.cmd.active:
        student.proj.requires_grad_(False)
    needs_lidar = frozen is not None or config.losses.depth.active
    return StageSetup(student, StudentObjective(student, config.losses), frozen, mult if init != "random" else 1.0,
                      needs_lidar, init)


def param_groups(setup: StageSetup, lr: float, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: the image encoder at lr * encoder_lr_mult, the rest at lr; frozen parameters left out."""
    model = setup.model
    encoder = [p for p in (*model.backbone.parameters(), *model.neck.parameters()) if p.requires_grad]
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": encoder, "lr": lr * setup.encoder_lr_mult, "weight_decay": weight_decay, "name": "encoder"},
            {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "other"}]
