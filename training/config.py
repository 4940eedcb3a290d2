"""The training configuration: frozen dataclasses loaded from YAML (config/train/<name>.yaml), like
core/config.py's DetectorConfig and through the same checked converter (every field typed; a missing,
unknown or ill-typed field is a ValueError naming its dotted path and the file; `yaml.safe_load` only).

Defaults are the paper-scale recipe (method.md sections 4, 6 and 7). A training config names a model
preset (`model: r50` or a path to a DetectorConfig YAML); the stage (teacher, student, baseline) is a
command-line choice, not a config field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from simdistill_ros.core.classes import BOX_CODE_SIZE
from simdistill_ros.core.config import DetectorConfig, config_from_dict, load_preset, preset_dirs
from training.data.augment import BevAugConfig, ImageAugConfig
from training.data.dataset import DEFAULT_POINT_RANGE

PRECISIONS = ("fp32", "bf16", "fp16")
PAPER_CODE_WEIGHTS: tuple[float, ...] = (1.0,) * 8 + (0.2, 0.2)


def _require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ValueError(f"config field {name!r}: {message}")


@dataclass(frozen=True)
class LossTerm:
    """A switchable, weighted loss term."""

    enabled: bool
    weight: float

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")

    @property
    def active(self) -> bool:
        return self.enabled and self.weight > 0


@dataclass(frozen=True)
class PredictionDistillConfig:
    """MMD-P (method.md section 6): QFL on the heatmaps against the teacher's probabilities, normalised
    by the number of teacher probabilities above prob_threshold; SmoothL1(beta) of the code-weighted
    student - teacher box codes at the valid ground-truth centre slots."""

    enabled: bool = True
    cls_weight: float = 0.25
    reg_weight: float = 0.25
    prob_threshold: float = 0.1
    smooth_l1_beta: float = 1.0 / 9.0

    def __post_init__(self) -> None:
        _require(self.cls_weight >= 0 and self.reg_weight >= 0, "losses.mmd_p", "weights must be >= 0")
        _require(0 < self.prob_threshold < 1, "losses.mmd_p.prob_threshold", "must be in (0, 1)")
        _require(self.smooth_l1_beta > 0, "losses.mmd_p.smooth_l1_beta", "must be positive")

    @property
    def active(self) -> bool:
        return self.enabled and (self.cls_weight > 0 or self.reg_weight > 0)


@dataclass(frozen=True)
class LossConfig:
    """Detection (CenterPoint) and distillation loss terms (method.md section 6).

    heatmap_weight / bbox_weight: gaussian focal loss and code-weighted L1 (0.25) per task.
    imd, cmd, mmd_f, mmd_p: the four distillation terms, used by the student stage only.
    depth: optional LiDAR depth supervision of the camera depth distributions (BEVDepth-style BCE).
    """

    heatmap_weight: float = 1.0
    bbox_weight: float = 0.25
    code_weights: tuple[float, ...] = PAPER_CODE_WEIGHTS
    imd: LossTerm = field(default_factory=lambda: LossTerm(True, 1.0))
    cmd: LossTerm = field(default_factory=lambda: LossTerm(True, 100.0))
    mmd_f: LossTerm = field(default_factory=lambda: LossTerm(True, 1.0))
    mmd_p: PredictionDistillConfig = field(default_factory=PredictionDistillConfig)
    depth: LossTerm = field(default_factory=lambda: LossTerm(False, 3.0))

    def __post_init__(self) -> None:
        _require(len(self.code_weights) == BOX_CODE_SIZE, "losses.code_weights",
                 f"needs {BOX_CODE_SIZE} values, got {len(self.code_weights)}")
        _require(all(w >= 0 for w in self.code_weights), "losses.code_weights", "must be >= 0")
        _require(self.heatmap_weight >= 0 and self.bbox_weight >= 0, "losses", "detection weights must be >= 0")

    @property
    def distills(self) -> bool:
        return self.imd.active or self.cmd.active or self.mmd_f.active or self.mmd_p.active


@dataclass(frozen=True)
class TargetConfig:
    """CenterPoint targets: gaussian radius from the box size in head cells with this overlap, at
    least min_radius cells; at most max_objects regression slots per task and sample."""

    gaussian_overlap: float = 0.1
    min_radius: int = 2
    max_objects: int = 500

    def __post_init__(self) -> None:
        _require(0 < self.gaussian_overlap < 1, "targets.gaussian_overlap", "must be in (0, 1)")
        _require(self.min_radius >= 0, "targets.min_radius", "must be >= 0")
        _require(self.max_objects >= 1, "targets.max_objects", "must be >= 1")


@dataclass(frozen=True)
class LidarConfig:
    """The teacher's LiDAR branch: key frame + max_sweeps sweeps, pillars on the BEV pooling grid with
    pillar_channels features, encoder_blocks residual blocks per stage down to the head grid.
    point_range: (xmin, ymin, zmin, xmax, ymax, zmax) of kept points in the (augmented) ego frame."""

    max_sweeps: int = 9
    pillar_channels: int = 64
    encoder_blocks: int = 2
    point_range: tuple[float, float, float, float, float, float] = DEFAULT_POINT_RANGE  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _require(0 <= self.max_sweeps <= 10, "lidar.max_sweeps", "must be in [0, 10]")
        _require(self.pillar_channels > 0, "lidar.pillar_channels", "must be positive")
        _require(self.encoder_blocks >= 1, "lidar.encoder_blocks", "must be >= 1")
        lo, hi = self.point_range[:3], self.point_range[3:]
        _require(all(a < b for a, b in zip(lo, hi)), "lidar.point_range", "needs min < max on each axis")


@dataclass(frozen=True)
class DataConfig:
    """Dataset splits, sampling and augmentation (method.md section 7).

    cbgs: class-balanced resampling of the training split; augment: image and BEV augmentation on the
    training split (the validation split always uses the test-time transform); workers: DataLoader
    processes per training process (decoding and augmentation run there); pin_memory: on CUDA only.
    """

    version: str = "v1.0-trainval"
    train_split: str = "train"
    val_split: str = "val"
    cbgs: bool = True
    augment: bool = True
    image_aug: ImageAugConfig = field(default_factory=ImageAugConfig)
    bev_aug: BevAugConfig = field(default_factory=BevAugConfig)
    workers: int = 4
    pin_memory: bool = True
    min_lidar_pts: int = 1

    def __post_init__(self) -> None:
        _require(self.workers >= 0, "data.workers", "must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a one-cycle schedule (method.md section 7).

    lr: base learning rate; the schedule starts there, rises to lr * peak_ratio over the first
    up_fraction of the optimiser steps and anneals (cosine) to lr * final_ratio; AdamW's beta1 cycles
    between momentum_range (low at the peak lr). encoder_lr_mult: factor on the image encoder's lr when
    it is initialised from the teacher (method.md defect 5). grad_clip: max L2 norm (0 = off).
    """

    lr: float = 2.0e-4
    weight_decay: float = 0.01
    encoder_lr_mult: float = 0.1
    grad_clip: float = 35.0
    peak_ratio: float = 5.0
    up_fraction: float = 0.4
    final_ratio: float = 1.0e-4
    momentum_range: tuple[float, float] = (0.8053, 0.9)

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", "must be positive")
        _require(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _require(self.encoder_lr_mult > 0, "optim.encoder_lr_mult", "must be positive")
        _require(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")
        _require(self.peak_ratio >= 1, "optim.peak_ratio", "must be >= 1")
        _require(0 < self.up_fraction < 1, "optim.up_fraction", "must be in (0, 1)")
        _require(0 < self.final_ratio <= 1, "optim.final_ratio", "must be in (0, 1]")
        lo, hi = self.momentum_range
        _require(0 < lo <= hi < 1, "optim.momentum_range", "needs 0 < low <= high < 1")


@dataclass(frozen=True)
class ScheduleConfig:
    """How long and how: epochs; batch_size per process; accumulate micro-batches per optimiser step
    (effective batch = batch_size x accumulate x processes); precision fp32, bf16 or fp16 (fp16 on CUDA
    only, with loss scaling); channels_last on CUDA; sync_bn converts BatchNorm to SyncBatchNorm under
    DDP on CUDA; eval_every: devkit evaluation on the val split every K epochs and after the last
    (0 = never); log_every: optimiser steps between log lines; keep_checkpoints: epoch checkpoints kept;
    max_steps_per_epoch: cut epochs short (0 = whole epochs; pilots and tests)."""

    epochs: int = 20
    batch_size: int = 3
    accumulate: int = 2
    precision: str = "bf16"
    channels_last: bool = True
    sync_bn: bool = False
    eval_every: int = 0
    log_every: int = 10
    keep_checkpoints: int = 2
    max_steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "schedule.epochs", "must be >= 1")
        _require(self.batch_size >= 1, "schedule.batch_size", "must be >= 1")
        _require(self.accumulate >= 1, "schedule.accumulate", "must be >= 1")
        _require(self.precision in PRECISIONS, "schedule.precision", f"must be one of {', '.join(PRECISIONS)}")
        _require(self.eval_every >= 0, "schedule.eval_every", "must be >= 0")
        _require(self.log_every >= 1, "schedule.log_every", "must be >= 1")
        _require(self.keep_checkpoints >= 1, "schedule.keep_checkpoints", "must be >= 1")
        _require(self.max_steps_per_epoch >= 0, "schedule.max_steps_per_epoch", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the stage, the dataroot and the output folder.

    model: preset name (config/models/<name>.yaml) or path of a DetectorConfig YAML.
    gcm: False ablates the GCM (its output projection is zeroed and frozen, so S_l = S_a exactly and the
    checkpoint still loads in a Detector). seed: weights, data order and augmentation.
    """

    model: str
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    gcm: bool = True
    seed: int = 0

    def detector_config(self) -> DetectorConfig:
        """The DetectorConfig named by `model` (relative paths are taken as given)."""
        return load_preset(self.model)


def train_config_dirs() -> list[Path]:
    """Folders searched for config/train/<name>.yaml (beside each model preset folder)."""
    return [d.parent / "train" for d in preset_dirs()]


def load_train_config(name_or_path: str | os.PathLike[str]) -> TrainConfig:
    """Load a TrainConfig from a YAML path, or by name from config/train/; errors name file and field.
    A relative `model:` path in the file is resolved against the file's folder when it exists there."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if not text_name.endswith((".yaml", ".yml")) and os.sep not in text_name:
        found = [d / f"{text_name}.yaml" for d in train_config_dirs() if (d / f"{text_name}.yaml").is_file()]
        if not found:
            names = sorted({p.stem for d in train_config_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ValueError(f"unknown training config {text_name!r}; available: {', '.join(names) or 'none'}")
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read training config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"training config {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"training config {path}: expected a mapping at the top level")
    model = data.get("model")
    if isinstance(model, str) and model.endswith((".yaml", ".yml")) and not Path(model).is_absolute():
        beside = path.parent / model
        if beside.is_file():
            data = {**data, "model": str(beside)}
    try:
        config = config_from_dict(TrainConfig, data)
        config.detector_config()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return config
