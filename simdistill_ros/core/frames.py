"""Rotations between the frames of REP 103 and quaternion helpers, in numpy (no torch: the synthetic-data
generator, the transform buffer and the ROS message conversion use them).

Body frames (ego, LiDAR): x forward, y left, z up. Camera optical frames: z forward, x right, y down.
Quaternions are (x, y, z, w), the order of geometry_msgs/Quaternion. They are written here rather than
taken from pyquaternion or scipy because core may import only torch, numpy, PyYAML and the standard
library; the tests check them against pyquaternion.
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


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w) (ROS order); normalised first, zero norm is a ValueError."""
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0 of a 3x3 rotation (Shepperd's method: stable for any angle)."""
    m = np.asarray(R, dtype=np.float64).reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    diag = (tr, m[0, 0], m[1, 1], m[2, 2])
    k = int(np.argmax(diag))
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + tr, 1e-300))
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 1e-300))
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 1e-300))
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 1e-300))
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    out = np.array(q) / np.linalg.norm(q)
    return -out if out[3] < 0 else out


def slerp(q0_xyzw: np.ndarray, q1_xyzw: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (x, y, z, w), shortest arc, t in [0, 1]."""
    q0 = np.asarray(q0_xyzw, dtype=np.float64)
    q1 = np.asarray(q1_xyzw, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to rounding and avoids 0/0
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) / s) * q0 + (math.sin(t * theta) / s) * q1


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation by yaw radians about +z."""
    return np.array([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)])
