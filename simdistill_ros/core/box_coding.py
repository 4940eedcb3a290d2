"""CenterPoint box code: 3D boxes <-> (head cell, 10-vector regression code).

A box (x, y, z_centre, length, width, height, yaw, vx, vy) in the ego frame lies at the continuous
head-cell coordinate (cx, cy) = ((x - x_min) / res, (y - y_min) / res), res = geometry.head_resolution.
Its cell is (row, col) = (floor(cy), floor(cx)) and its code (the head's channel layout, see
classes.BOX_CODE_SIZE) is

    [cx - col, cy - row, z_centre, log(length), log(width), log(height), sin(yaw), cos(yaw), vx, vy]

so reg in [0, 1) for the cell holding the centre. Decoding inverts it: x = x_min + (col + reg_x) * res.
"""
from __future__ import annotations

import torch
from torch import Tensor

from simdistill_ros.core.classes import BOX_CODE_SIZE
from simdistill_ros.core.config import GeometryConfig


def continuous_cell(xy_m2: Tensor, geometry: GeometryConfig) -> Tensor:
    """M x 2 continuous head-cell coordinates (cx, cy) of ego points (x, y)."""
    res = geometry.head_resolution
    origin = xy_m2.new_tensor([geometry.x_range[0], geometry.y_range[0]])
    return (xy_m2 - origin) / res


def cells_inside(cell_rc: Tensor, geometry: GeometryConfig) -> Tensor:
    """M bool: whether each (row, col) lies on the head grid."""
    ny, nx = geometry.head_size
    return (cell_rc[:, 0] >= 0) & (cell_rc[:, 0] < ny) & (cell_rc[:, 1] >= 0) & (cell_rc[:, 1] < nx)


def encode_boxes(boxes_m9: Tensor, geometry: GeometryConfig) -> tuple[Tensor, Tensor]:
    """Regression targets of boxes (M x 9: x, y, z_centre, length, width, height, yaw, vx, vy).

    Returns (cell_rc M x 2 int64 (row, col) of the cell holding each centre, which may lie off the
    grid (see `cells_inside`); code M x 10 in the head's channel order). Sizes must be positive.
    """
    if boxes_m9.ndim != 2 or boxes_m9.shape[1] != 9:
        raise ValueError(f"boxes: expected shape M x 9, got {tuple(boxes_m9.shape)}")
    cxy = continuous_cell(boxes_m9[:, :2], geometry)
    cell_xy = torch.floor(cxy)
    reg = cxy - cell_xy
    cell_rc = cell_xy.flip(-1).long()
    yaw = boxes_m9[:, 6:7]
    code = torch.cat([reg, boxes_m9[:, 2:3], torch.log(boxes_m9[:, 3:6]), torch.sin(yaw), torch.cos(yaw),
                      boxes_m9[:, 7:9]], dim=1)
    return cell_rc, code


def decode_code(cell_rc: Tensor, code_m10: Tensor, geometry: GeometryConfig) -> Tensor:
    """Boxes (M x 9) from cells (M x 2 (row, col)) and codes (M x 10); the inverse of `encode_boxes`.

    Works on any leading shape: cell_rc ... x 2, code ... x 10 -> boxes ... x 9.
    """
    if code_m10.shape[-1] != BOX_CODE_SIZE:
        raise ValueError(f"code: expected last dimension {BOX_CODE_SIZE}, got {tuple(code_m10.shape)}")
    res = geometry.head_resolution
    cell = cell_rc.to(code_m10.dtype)
    x = geometry.x_range[0] + (cell[..., 1] + code_m10[..., 0]) * res
    y = geometry.y_range[0] + (cell[..., 0] + code_m10[..., 1]) * res
    yaw = torch.atan2(code_m10[..., 6], code_m10[..., 7])
    return torch.cat([x[..., None], y[..., None], code_m10[..., 2:3], torch.exp(code_m10[..., 3:6]),
                      yaw[..., None], code_m10[..., 8:10]], dim=-1)
