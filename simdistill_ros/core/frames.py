"""Rotations between the frames of REP 103, in numpy (no torch: the synthetic-data generator uses them).

Body frames (ego, LiDAR): x forward, y left, z up. Camera optical frames: z forward, x right, y down.
"""
from __future__ import annotations

import math

import numpy as np

OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""3x3 rotation from a camera optical frame to the body frame that looks the same way."""


def yaw_rotation(yaw: float) -> np.ndarray:
    """3x3 rotation by yaw radians about +z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
