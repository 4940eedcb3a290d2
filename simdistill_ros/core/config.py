"""Frozen configuration dataclasses (geometry, model, post-processing, runtime) and their YAML form.

A preset (config/models/<name>.yaml) is a `DetectorConfig`: geometry + model + postprocess. Loading
checks every field: a missing, unknown or ill-typed field is a ValueError that names it (with its dotted
path and the file). Nothing here is evaluated; YAML goes through `yaml.safe_load`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from simdistill_ros.core.classes import CLASS_NAMES, DEFAULT_TASKS, TaskSpec

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


def _require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ValueError(f"config field {name!r}: {message}")


@dataclass(frozen=True)
class GeometryConfig:
    """Image and BEV geometry shared by the student, the teacher and the data pipeline.

    image_size: network input (H, W) in pixels after resize and crop.
    resize_width: at test time a raw image is resized (aspect kept) to this width, then cropped to
        image_size bottom-aligned and horizontally centred (BEVFusion's test transform: 1600 -> 768).
    feature_stride: stride of the image features fed to the view transforms (8 -> 32x88 for 256x704).
    depth_min/depth_max/depth_step: depth bins [min, max) in metres along the optical axis.
    x_range/y_range/z_range: BEV volume in the ego frame (x forward, y left, z up), metres.
    bev_resolution: size of a BEV pooling cell in metres (the LSS grid).
    bev_downsample: stride of the BEV downsample after pooling; the head grid has cells of
        bev_resolution * bev_downsample metres.
    """

    image_size: tuple[int, int]
    resize_width: int
    feature_stride: int
    depth_min: float
    depth_max: float
    depth_step: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z_range: tuple[float, float]
    bev_resolution: float
    bev_downsample: int

    def __post_init__(self) -> None:
        h, w = self.image_size
        _require(h > 0 and w > 0, "geometry.image_size", f"must be positive, got {self.image_size}")
        _require(self.feature_stride in (4, 8, 16, 32), "geometry.feature_stride", "must be 4, 8, 16 or 32")
        _require(h % self.feature_stride == 0 and w % self.feature_stride == 0, "geometry.image_size",
                 f"{self.image_size} must be divisible by feature_stride {self.feature_stride}")
        _require(self.resize_width >= w, "geometry.resize_width", f"{self.resize_width} must be >= input width {w}")
        _require(0 < self.depth_min < self.depth_max, "geometry.depth_min", "need 0 < depth_min < depth_max")
        _require(self.depth_step > 0, "geometry.depth_step", "must be positive")
        _require(self.bev_resolution > 0, "geometry.bev_resolution", "must be positive")
        _require(self.bev_downsample in (1, 2, 4), "geometry.bev_downsample", "must be 1, 2 or 4")
        for name in ("x_range", "y_range", "z_range"):
            lo, hi = getattr(self, name)
            _require(lo < hi, f"geometry.{name}", f"need min < max, got {(lo, hi)}")
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            cells = (hi - lo) / self.bev_resolution
            _require(abs(cells - round(cells)) < 1e-6, f"geometry.{name}",
                     f"extent {hi - lo} is not a whole number of {self.bev_resolution} m cells")
            _require(round(cells) % self.bev_downsample == 0, f"geometry.{name}",
                     f"{round(cells)} cells not divisible by bev_downsample {self.bev_downsample}")

    @property
    def num_depth_bins(self) -> int:
        return int(math.floor((self.depth_max - self.depth_min) / self.depth_step + 1e-6))

    @property
    def feature_size(self) -> tuple[int, int]:
        """(fH, fW) of the image features."""
        return self.image_size[0] // self.feature_stride, self.image_size[1] // self.feature_stride

    @property
    def bev_size(self) -> tuple[int, int]:
        """(ny, nx) of the pooling grid: rows index y, columns index x."""
        ny = round((self.y_range[1] - self.y_range[0]) / self.bev_resolution)
        nx = round((self.x_range[1] - self.x_range[0]) / self.bev_resolution)
        return ny, nx

    @property
    def head_size(self) -> tuple[int, int]:
        """(ny, nx) of the head grid (after the BEV downsample)."""
        ny, nx = self.bev_size
        return ny // self.bev_downsample, nx // self.bev_downsample

    @property
    def head_resolution(self) -> float:
        return self.bev_resolution * self.bev_downsample


@dataclass(frozen=True)
class GCMConfig:
    """Geometry Compensation Module: one deformable self-attention layer on the BEV map."""

    num_heads: int
    num_points: int

    def __post_init__(self) -> None:
        _require(self.num_heads >= 1, "model.gcm.num_heads", "must be >= 1")
        _require(self.num_points >= 1, "model.gcm.num_points", "must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the student (and of the teacher it mirrors).

    backbone_depth: ResNet depth, 18, 34 or 50.
    neck_channels: image features after the FPN-style neck (256 in the paper).
    context_channels: channels of each camera BEV map (C=80 in the paper); even (the GCM's positional
        embedding is half rows, half columns) and divisible by gcm.num_heads.
    fuser_channels: fused BEV channels (256).
    lidar_channels: channels of the teacher's LiDAR BEV map, the target of the student's CMD projection.
    decoder_channels: BEV decoder stages (128, 256, 512) at strides 2, 4, 4 of the head grid.
    head_channels: CenterHead shared conv output (64).
    backbone_width: base channels of the ResNet (stem and layer1; layer2..4 have 2x, 4x, 8x). 64 is the
        standard ResNet and the only width ImageNet weights fit; 16-32 are for CPU-sized models (demo).
    """

    backbone_depth: int
    neck_channels: int
    context_channels: int
    fuser_channels: int
    lidar_channels: int
    decoder_channels: tuple[int, int, int]
    head_channels: int
    gcm: GCMConfig
    backbone_width: int = 64
    camera_names: tuple[str, ...] = NUSCENES_CAMERAS
    tasks: tuple[TaskSpec, ...] = DEFAULT_TASKS

    def __post_init__(self) -> None:
        _require(self.backbone_depth in (18, 34, 50), "model.backbone_depth", "must be 18, 34 or 50")
        _require(8 <= self.backbone_width <= 256 and self.backbone_width % 8 == 0, "model.backbone_width",
                 f"must be a multiple of 8 in [8, 256], got {self.backbone_width}")
        for name in ("neck_channels", "context_channels", "fuser_channels", "lidar_channels", "head_channels"):
            _require(getattr(self, name) > 0, f"model.{name}", "must be positive")
        _require(len(self.decoder_channels) == 3, "model.decoder_channels", "needs 3 stages")
        _require(self.context_channels % self.gcm.num_heads == 0, "model.gcm.num_heads",
                 f"must divide context_channels {self.context_channels}")
        _require(self.context_channels % 2 == 0, "model.context_channels", "must be even")
        _require(len(self.camera_names) >= 1, "model.camera_names", "needs at least one camera")
        _require(len(set(self.camera_names)) == len(self.camera_names), "model.camera_names", "has duplicates")
        seen: list[str] = []
        for i, task in enumerate(self.tasks):
            _require(task.nms_type in ("circle", "rotate"), f"model.tasks[{i}].nms_type", "must be circle or rotate")
            _require(len(task.size_scale) == len(task.class_names), f"model.tasks[{i}].size_scale",
                     "needs one factor per class")
            _require(all(s > 0 for s in task.size_scale), f"model.tasks[{i}].size_scale", "factors must be positive")
            _require(task.circle_radius > 0, f"model.tasks[{i}].circle_radius", "must be positive")
            _require(0 < task.nms_iou < 1, f"model.tasks[{i}].nms_iou", "must be in (0, 1)")
            for name in task.class_names:
                _require(name in CLASS_NAMES, f"model.tasks[{i}].class_names", f"unknown class {name!r}")
                seen.append(name)
        _require(len(seen) == len(set(seen)), "model.tasks", "a class appears in two tasks")

    @property
    def class_names(self) -> tuple[str, ...]:
        """All classes in head order (task by task)."""
        return tuple(name for task in self.tasks for name in task.class_names)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and NMS settings (CenterPoint test_cfg).

    pre_nms_top_k: top-K candidates per task before NMS; post_nms_max: kept per task after NMS;
    max_detections: kept overall, best scores first; post_center_range: (xmin, ymin, zmin, xmax, ymax, zmax).
    """

    score_threshold: float = 0.1
    pre_nms_top_k: int = 1000
    post_nms_max: int = 83
    max_detections: int = 300
    post_center_range: tuple[float, float, float, float, float, float] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)

    def __post_init__(self) -> None:
        _require(0.0 <= self.score_threshold < 1.0, "postprocess.score_threshold", "must be in [0, 1)")
        _require(self.pre_nms_top_k >= 1, "postprocess.pre_nms_top_k", "must be >= 1")
        _require(self.post_nms_max >= 1, "postprocess.post_nms_max", "must be >= 1")
        _require(self.max_detections >= 1, "postprocess.max_detections", "must be >= 1")
        lo, hi = self.post_center_range[:3], self.post_center_range[3:]
        _require(all(a < b for a, b in zip(lo, hi)), "postprocess.post_center_range",
                 f"needs (xmin, ymin, zmin) < (xmax, ymax, zmax), got {self.post_center_range}")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to build and run the student: stored in every checkpoint."""

    name: str
    geometry: GeometryConfig
    model: ModelConfig
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run a model on this machine (not stored in checkpoints)."""

    device: str = "cpu"
    precision: str = "fp32"
    backend: str = "torch"

    def __post_init__(self) -> None:
        _require(self.precision in ("fp32", "fp16", "bf16"), "runtime.precision", "must be fp32, fp16 or bf16")
        _require(self.backend in ("torch", "compiled", "cudagraph", "onnxruntime", "tensorrt", "auto"),
                 "runtime.backend", "must be torch, compiled, cudagraph, onnxruntime, tensorrt or auto")


T = TypeVar("T")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, naming `where` on a mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"config field {where!r}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field {where!r}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"config field {where!r}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported union type at {where}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ValueError(f"config field {where!r}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config field {where!r}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config field {where!r}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"config field {where!r}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"config {where or 'root'!r}: unknown field(s) {', '.join(unknown)}; "
                         f"expected {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ValueError(f"config field {path!r} is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], path)
    return cls(**kwargs)


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from plain data, checking every field."""
    return _from_dict(cls, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data (YAML/JSON-safe) form of a config dataclass; tuples become lists."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def load_detector_config(path: str | os.PathLike[str]) -> DetectorConfig:
    """Load a DetectorConfig YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level")
    try:
        return config_from_dict(DetectorConfig, data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def save_detector_config(config: DetectorConfig, path: str | os.PathLike[str]) -> None:
    """Write a DetectorConfig as YAML (atomically: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    os.replace(tmp, path)


def preset_dirs() -> list[Path]:
    """Folders searched for config/models/<preset>.yaml: the source checkout, the install prefix
    (pip data_files), and every ament prefix (colcon install)."""
    dirs = [Path(__file__).resolve().parents[2] / "config" / "models",
            Path(sys.prefix) / "share" / "simdistill_ros" / "config" / "models"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "simdistill_ros" / "config" / "models")
    return dirs


def available_presets() -> list[str]:
    names: set[str] = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_preset(name: str) -> DetectorConfig:
    """Load a named preset (`tiny`, `r50`) or a path to a preset YAML file."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return load_detector_config(name)
    for d in preset_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return load_detector_config(candidate)
    raise ValueError(f"unknown preset {name!r}; available: {', '.join(available_presets()) or 'none found'}")
