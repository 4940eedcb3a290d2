"""Core data containers: a camera's calibration, a synchronised multi-camera Frame, and Detections.

Frames: ego = the vehicle body frame (x forward, y left, z up; REP 103); camera = optical frame
(z forward, x right, y down). Boxes are (x, y, z_centre, length, width, height, yaw, vx, vy) in ego.
Every constructor validates and raises a ValueError naming the camera and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX_DIM = 9


def _check_matrix(value: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return arr


@dataclass(frozen=True)
class CameraCalibration:
    """Calibration of one camera for images of `image_size` (H, W) pixels.

    K: 3x3 pinhole intrinsics (fx, fy > 0). cam_to_ego: 4x4 rigid transform from the camera optical
    frame to the ego frame.
    """

    name: str
    K: np.ndarray
    cam_to_ego: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        where = f"camera {self.name!r}"
        K = _check_matrix(self.K, (3, 3), f"{where} field K")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(np.linalg.det(K)) < 1e-9:
            raise ValueError(f"{where} field K: singular or non-positive focal lengths (fx={K[0, 0]}, fy={K[1, 1]})")
        if K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise ValueError(f"{where} field K: last row must be [0, 0, 1], got {K[2].tolist()}")
        T = _check_matrix(self.cam_to_ego, (4, 4), f"{where} field cam_to_ego")
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
            raise ValueError(f"{where} field cam_to_ego: not a rigid transform (rotation not orthonormal or bad last row)")
        size = tuple(self.image_size) if isinstance(self.image_size, (tuple, list, np.ndarray)) else ()
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
            raise ValueError(f"{where} field image_size: expected two integers (H, W), got {self.image_size!r}")
        h, w = (int(v) for v in size)
        if h <= 0 or w <= 0:
            raise ValueError(f"{where} field image_size: must be positive, got {self.image_size}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "cam_to_ego", T)
        object.__setattr__(self, "image_size", (h, w))


@dataclass(frozen=True)
class Frame:
    """One synchronised set of camera images.

    images: one uint8 H x W x 3 RGB array per camera, in the model's camera order.
    calibrations: one CameraCalibration per camera, same order; its image_size must match the image.
    stamp_ns: stamp of the set (the anchor camera's), nanoseconds.
    valid: optional per-camera flag; False marks a camera whose image is missing (masked at inference).
    """

    images: tuple[np.ndarray, ...]
    calibrations: tuple[CameraCalibration, ...]
    stamp_ns: int = 0
    valid: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        images = tuple(self.images)
        calibs = tuple(self.calibrations)
        if len(images) != len(calibs):
            raise ValueError(f"frame: {len(images)} images but {len(calibs)} calibrations")
        for img, cal in zip(images, calibs):
            where = f"camera {cal.name!r} field image"
            if not isinstance(img, np.ndarray):
                raise ValueError(f"{where}: expected a numpy array, got {type(img).__name__}")
            if img.dtype != np.uint8:
                raise ValueError(f"{where}: expected dtype uint8, got {img.dtype}")
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{where}: expected shape H x W x 3, got {img.shape}")
            if tuple(img.shape[:2]) != cal.image_size:
                raise ValueError(f"{where}: size {img.shape[1]}x{img.shape[0]} (WxH) differs from the calibration's "
                                 f"{cal.image_size[1]}x{cal.image_size[0]}")
        if self.valid is not None:
            if len(self.valid) != len(images):
                raise ValueError(f"frame field valid: {len(self.valid)} flags for {len(images)} cameras")
            if not all(isinstance(v, (bool, np.bool_)) for v in self.valid):
                raise ValueError(f"frame field valid: expected booleans, got {list(self.valid)}")
            if not any(self.valid):
                raise ValueError("frame field valid: every camera is marked missing")
            object.__setattr__(self, "valid", tuple(bool(v) for v in self.valid))
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, (int, np.integer)) or self.stamp_ns < 0:
            raise ValueError(f"frame field stamp_ns: expected a non-negative integer (nanoseconds), got {self.stamp_ns!r}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "calibrations", calibs)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.calibrations)


@dataclass(frozen=True)
class Detections:
    """3D detections in the ego frame.

    boxes: M x 9 float32 (x, y, z_centre, length, width, height, yaw, vx, vy); scores: M float32;
    labels: M int64 indices into class_names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    stamp_ns: int = 0
    frame_id: str = "base_link"
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, BOX_DIM)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"detections: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError("detections field labels: index outside class_names")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels]
