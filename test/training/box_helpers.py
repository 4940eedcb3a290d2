"""Box geometry for the training tests (not used by the package): corners of and points inside M x 9
(or M x 7) boxes (x, y, z_centre, l, w, h, yaw, ...)."""
from __future__ import annotations

import numpy as np


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """M x 8 x 3 corners of M x 9 (or M x 7) boxes in the boxes' frame."""
    signs = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64)
    local = signs[None] * boxes[:, None, 3:6] / 2.0
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def points_in_boxes(points_xyz: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """P x M bool: whether each point lies inside each (yawed) box, grown by margin metres."""
    d = points_xyz[:, None, :3] - boxes[None, :, :3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = d[..., 0] * c + d[..., 1] * s
    ly = -d[..., 0] * s + d[..., 1] * c
    half = boxes[:, 3:6] / 2.0 + margin
    return (np.abs(lx) <= half[:, 0]) & (np.abs(ly) <= half[:, 1]) & (np.abs(d[..., 2]) <= half[:, 2])
