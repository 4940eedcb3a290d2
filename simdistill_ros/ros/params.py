"""The detector node's parameters: one table of names, defaults, ranges and descriptions, and their validation.

node.py declares every entry with a ParameterDescriptor (floating/integer ranges from this table, so
rclpy itself refuses out-of-range values at start and through SetParameters), reads them back, and
calls `validate`, which checks what a range cannot (choices, lists, files, cross-field rules) and raises
a `ParameterError` naming the parameter. Nothing falls back silently: an empty `model` is the documented
default, the bundled checkpoint (`resolve_model`), and the node logs the path it loaded. No ROS import here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simdistill_ros.core.config import NUSCENES_CAMERAS
from simdistill_ros.core.sync import SyncPolicy


class ParameterError(ValueError):
    """A parameter value the node cannot start with; `name` is the parameter."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"parameter {name!r}: {message}")
        self.name = name


@dataclass(frozen=True)
class ParamSpec:
    """name, default (its type is the parameter's type), description, and a numeric range (lo, hi, step)."""

    name: str
    default: Any
    description: str
    range: tuple[float, float, float] | None = None
    read_only: bool = True


DEFAULT_IMAGE_TOPICS = [f"{c.lower()}/image_raw" for c in NUSCENES_CAMERAS]
DEFAULT_INFO_TOPICS = [f"{c.lower()}/camera_info" for c in NUSCENES_CAMERAS]

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "", "student checkpoint (.pt), ONNX file or TensorRT engine; empty: the bundled model "
                           "(simdistill_ros.models.BUNDLED_CHECKPOINT)"),
    ParamSpec("backend", "auto", "inference backend: torch, onnxruntime, tensorrt or auto"),
    ParamSpec("device", "cpu", "torch device: cpu, cuda or cuda:N"),
    ParamSpec("precision", "fp32", "fp32, or fp16 (CUDA only)"),
    ParamSpec("score_threshold", 0.1, "minimum score of a published detection", (0.0, 1.0, 0.0), read_only=False),
    ParamSpec("max_detections", 300, "most detections published per set", (1, 1000, 1), read_only=False),
    ParamSpec("torch_threads", 0, "CPU threads of torch in the inference worker (0: torch's default)", (0, 256, 1)),
    ParamSpec("cameras", list(NUSCENES_CAMERAS), "camera names in the model's camera order (as in the checkpoint)"),
    ParamSpec("image_topics", DEFAULT_IMAGE_TOPICS, "image topic per camera (relative names are remappable)"),
    ParamSpec("camera_info_topics", DEFAULT_INFO_TOPICS, "CameraInfo topic per camera"),
    ParamSpec("compressed", False, "subscribe sensor_msgs/CompressedImage (jpeg/png) instead of sensor_msgs/Image"),
    ParamSpec("use_rectified", False, "images are rectified: take K from CameraInfo.P and ignore D"),
    ParamSpec("distorted", "undistort", "a camera with non-zero D: undistort (maps once per calibration) or refuse"),
    ParamSpec("target_frame", "base_link", "frame of the published detections (REP 105 vehicle frame)"),
    ParamSpec("motion_frame", "", "fixed frame for ego-motion compensation of each camera to the anchor stamp "
                                  "(e.g. odom); empty: static mounts"),
    ParamSpec("anchor_camera", "CAM_FRONT", "camera whose messages open a set; the set's stamp is its stamp"),
    ParamSpec("sync_slop", 0.08, "seconds another camera's stamp may differ from the anchor's", (0.0, 1.0, 0.0)),
    ParamSpec("sync_max_skew", 0.1, "largest spread of stamps in a set, seconds", (0.0, 2.0, 0.0)),
    ParamSpec("sync_timeout", 0.15, "stream seconds to wait for a late camera before it counts as missing",
              (0.0, 5.0, 0.0)),
    ParamSpec("missing_camera", "drop", "a camera missing from a set: drop the set, or mask the camera"),
    ParamSpec("reliable", False, "subscribe images reliably (default: sensor-data QoS, best effort)"),
    ParamSpec("qos_depth", 5, "subscription queue depth per camera topic", (1, 100, 1)),
    ParamSpec("queue_size", 8, "messages buffered per camera for synchronisation", (1, 100, 1)),
    ParamSpec("decode_threads", 6, "threads decoding compressed images", (1, 32, 1)),
    ParamSpec("marker_lifetime", 1.0, "lifetime of published markers, seconds (0: until replaced)", (0.0, 60.0, 0.0)),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.1, 60.0, 0.0)),
    ParamSpec("debug_latency", False, "publish ~/debug/latency_ms (clock - set stamp at publication) and "
                                      "~/debug/inference_ms (Detector.detect time) per set"),
)
BACKENDS = ("torch", "onnxruntime", "tensorrt", "auto")


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values (see SPECS for their meaning)."""

    model: str
    backend: str
    device: str
    precision: str
    score_threshold: float
    max_detections: int
    torch_threads: int
    cameras: tuple[str, ...]
    image_topics: tuple[str, ...]
    camera_info_topics: tuple[str, ...]
    compressed: bool
    use_rectified: bool
    distorted: str
    target_frame: str
    motion_frame: str
    anchor_camera: str
    sync_slop: float
    sync_max_skew: float
    sync_timeout: float
    missing_camera: str
    reliable: bool
    qos_depth: int
    queue_size: int
    decode_threads: int
    marker_lifetime: float
    diagnostics_period: float
    debug_latency: bool

    def sync_policy(self) -> SyncPolicy:
        return SyncPolicy(cameras=self.cameras, anchor=self.anchor_camera, slop_ns=round(self.sync_slop * 1e9),
                          max_skew_ns=round(self.sync_max_skew * 1e9), timeout_ns=round(self.sync_timeout * 1e9),
                          missing=self.missing_camera, queue_size=self.queue_size)  # type: ignore[arg-type]


def _choice(values: dict[str, Any], name: str, choices: tuple[str, ...]) -> None:
    if values[name] not in choices:
        raise ParameterError(name, f"{values[name]!r} is not one of {', '.join(choices)}")


def resolve_model(model: str) -> str:
    """The model file to load: `model`, or the bundled checkpoint when `model` is empty.

    simdistill_ros.models is imported only here and only then, so a node given a model starts without it;
    a missing bundled model is a ParameterError naming the path that was looked for."""
    if model:
        return model
    try:
        from simdistill_ros.models import BUNDLED_CHECKPOINT
    except ImportError as e:
        where = Path(__file__).resolve().parents[1] / "models"
        raise ParameterError("model", f"empty, and the bundled model is not installed ({where}: {e}); "
                                      "set it to a student checkpoint (-p model:=/path/to/model.pt)") from e
    if not Path(BUNDLED_CHECKPOINT).is_file():
        raise ParameterError("model", f"empty, and the bundled model {BUNDLED_CHECKPOINT} does not exist; "
                                      "set it to a student checkpoint (-p model:=/path/to/model.pt)")
    return str(BUNDLED_CHECKPOINT)


def validate(values: dict[str, Any]) -> NodeParams:
    """Check the values read back from the node (one per SPECS entry); ParameterError names the first bad one."""
    for spec in SPECS:
        if spec.range is not None:
            lo, hi, _ = spec.range
            if not lo <= values[spec.name] <= hi:
                raise ParameterError(spec.name, f"{values[spec.name]} is outside [{lo}, {hi}]")
    model = resolve_model(str(values["model"]))
    if not os.path.isfile(model):
        raise ParameterError("model", f"file {model} does not exist")
    _choice(values, "backend", BACKENDS)
    _choice(values, "precision", ("fp32", "fp16"))
    _choice(values, "distorted", ("undistort", "refuse"))
    _choice(values, "missing_camera", ("drop", "mask"))
    device = str(values["device"])
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ParameterError("device", f"{device!r} is not cpu, cuda or cuda:N")
    cameras = tuple(str(c) for c in values["cameras"])
    if not cameras or len(set(cameras)) != len(cameras) or not all(cameras):
        raise ParameterError("cameras", f"expected distinct non-empty camera names, got {list(cameras)}")
    for name in ("image_topics", "camera_info_topics"):
        topics = tuple(str(t) for t in values[name])
        if len(topics) != len(cameras):
            raise ParameterError(name, f"{len(topics)} topics for {len(cameras)} cameras ({', '.join(cameras)})")
        if not all(topics) or len(set(topics)) != len(topics):
            raise ParameterError(name, f"expected distinct non-empty topic names, got {list(topics)}")
    if values["anchor_camera"] not in cameras:
        raise ParameterError("anchor_camera", f"{values['anchor_camera']!r} is not one of the cameras {list(cameras)}")
    if not values["target_frame"]:
        raise ParameterError("target_frame", "empty")
    fields = {spec.name: values[spec.name] for spec in SPECS}
    fields.update(model=model, cameras=cameras, image_topics=tuple(values["image_topics"]),
                  camera_info_topics=tuple(values["camera_info_topics"]))
    return NodeParams(**fields)


def check_cameras(params: NodeParams, model_cameras: tuple[str, ...]) -> None:
    """The camera list must be the checkpoint's, in its order."""
    if params.cameras != tuple(model_cameras):
        raise ParameterError("cameras", f"{list(params.cameras)} differ from the checkpoint's camera order "
                                        f"{list(model_cameras)}")
