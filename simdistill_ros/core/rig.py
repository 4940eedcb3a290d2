"""A nuScenes-like six-camera rig (calibration, and random frames on it) for demos, benchmarks and tests.

f = 1266 px at 1600x900 (scaled with the image width), principal point at the image centre, cameras
1.6 m high, facing 0, -55, -110, 180, 110, 55 degrees (CAM_FRONT, FRONT_RIGHT, BACK_RIGHT, BACK,
BACK_LEFT, FRONT_LEFT).
"""
from __future__ import annotations

import math

import numpy as np

from simdistill_ros.core.frames import OPTICAL_TO_BODY, yaw_rotation
from simdistill_ros.core.types import CameraCalibration, Frame

RIG_YAWS_DEG: tuple[float, ...] = (0.0, -55.0, -110.0, 180.0, 110.0, 55.0)


def nuscenes_like_rig(names: tuple[str, ...], image_size: tuple[int, int] = (900, 1600)) -> tuple[CameraCalibration, ...]:
    """Calibrations of up to six cameras named `names`, for images of image_size (H, W)."""
    if len(names) > len(RIG_YAWS_DEG):
        raise ValueError(f"the sample rig has {len(RIG_YAWS_DEG)} cameras, {len(names)} names given")
    h, w = image_size
    f = 1266.0 * w / 1600.0
    K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    out = []
    for name, yaw_deg in zip(names, RIG_YAWS_DEG):
        a = math.radians(yaw_deg)
        T = np.eye(4)
        T[:3, :3] = yaw_rotation(a) @ OPTICAL_TO_BODY
        T[:3, 3] = [1.0 * math.cos(a), 0.5 * math.sin(a), 1.6]
        out.append(CameraCalibration(name, K, T, image_size))
    return tuple(out)


def random_frame(names: tuple[str, ...], seed: int | None = None, stamp_ns: int = 0,
                 image_size: tuple[int, int] = (900, 1600)) -> Frame:
    """A Frame of uniformly random uint8 images on this rig (seed None: fresh randomness)."""
    rng = np.random.default_rng(seed)
    calibs = nuscenes_like_rig(names, image_size)
    return Frame(tuple(rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in calibs), calibs, stamp_ns)
