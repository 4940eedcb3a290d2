"""The sensor rig: six nuScenes-like cameras and a 32-beam LIDAR_TOP on the ego vehicle.

Camera positions, yaws and intrinsics follow a real nuScenes calibration (scene-0061 era, rounded);
the optical frame is x right, y down, z forward (nuScenes' convention). LIDAR_TOP is mounted like
nuScenes': x right, y forward, z up (a -90 deg yaw from the ego frame). Camera firing times follow
the spinning LiDAR: each camera fires 7..49 ms after the LiDAR key frame timestamp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from simdistill_ros.core.frames import OPTICAL_TO_BODY, yaw_rotation

FULL_SIZE: tuple[int, int] = (900, 1600)  # (H, W) of a real nuScenes image


@dataclass(frozen=True)
class CameraSpec:
    """One camera. translation: ego frame (m); yaw_deg: looking direction, CCW from ego +x;
    f, cx, cy: intrinsics in pixels at 1600x900; offset_us: firing delay after the LiDAR."""

    channel: str
    translation: tuple[float, float, float]
    yaw_deg: float
    f: float
    cx: float
    cy: float
    offset_us: int


CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec("CAM_FRONT", (1.7008, 0.0159, 1.5110), 0.0, 1266.42, 816.27, 491.51, 12_000),
    CameraSpec("CAM_FRONT_RIGHT", (1.5508, -0.4934, 1.4957), -55.0, 1260.85, 807.97, 495.33, 19_000),
    CameraSpec("CAM_BACK_RIGHT", (1.0149, -0.4806, 1.5624), -110.0, 1259.51, 807.25, 501.20, 27_000),
    CameraSpec("CAM_BACK", (0.0283, 0.0035, 1.5791), 180.0, 809.22, 829.22, 481.78, 35_000),
    CameraSpec("CAM_BACK_LEFT", (1.0357, 0.4848, 1.5910), 110.0, 1256.74, 792.11, 492.78, 42_000),
    CameraSpec("CAM_FRONT_LEFT", (1.5239, 0.4946, 1.5093), 55.0, 1272.60, 826.62, 479.75, 49_000),
)

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_TRANSLATION: tuple[float, float, float] = (0.943713, 0.0, 1.84023)
LIDAR_YAW = -math.pi / 2
LIDAR_ELEVATIONS_DEG: np.ndarray = np.linspace(-30.67, 10.67, 32)  # HDL-32E, ring 0 = lowest
LIDAR_AZIMUTHS = 1084  # columns per revolution (~34.7k rays per sweep, like nuScenes)
LIDAR_MAX_RANGE = 70.0


def yaw_quaternion(yaw: float) -> list[float]:
    """(w, x, y, z) of a rotation about +z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def matrix_quaternion(r: np.ndarray) -> list[float]:
    """(w, x, y, z) of a proper rotation matrix, w >= 0."""
    q = Quaternion(matrix=np.asarray(r, dtype=np.float64)).normalised.elements
    return [float(v) for v in (-q if q[0] < 0 else q)]


def camera_to_ego(cam: CameraSpec) -> np.ndarray:
    """3x3 rotation from the optical frame (x right, y down, z forward) to the ego frame."""
    return yaw_rotation(math.radians(cam.yaw_deg)) @ OPTICAL_TO_BODY


def intrinsics(cam: CameraSpec, image_size: tuple[int, int]) -> np.ndarray:
    """3x3 camera matrix scaled from 1600x900 to image_size (H, W)."""
    sy, sx = image_size[0] / FULL_SIZE[0], image_size[1] / FULL_SIZE[1]
    return np.array([[cam.f * sx, 0.0, cam.cx * sx], [0.0, cam.f * sy, cam.cy * sy], [0.0, 0.0, 1.0]])


def lidar_to_ego() -> np.ndarray:
    return yaw_rotation(LIDAR_YAW)
