"""Frames, transforms and camera geometry: image augmentation matrices, the frustum, lifting frustum
points to the ego frame, projecting ego points into images, and BEV cell indices.

Conventions (REP 103): ego x forward, y left, z up; camera optical frame z forward, x right, y down.
`img_aug` (4x4) maps a raw-image point (u, v, depth, 1) to the network-input image: the 2D affine part
(resize, crop, flip, rotate) sits in [:2, :2] and [:2, 3]; depth passes through. `bev_aug` (4x4) maps
ego points to the augmented ego frame used in training (identity at inference).
BEV grids are indexed [row, col] = [y, x]: col = floor((x - x_min) / res), row = floor((y - y_min) / res).
Pixel coordinates: K follows the usual pinhole/OpenCV form; `img_aug` is applied to those coordinates
as BEVFusion does, ignoring the half-pixel shift between the integer-centre and [j, j+1) pixel
conventions (at most 0.5 raw pixels, about 1 cm at 30 m with nuScenes cameras).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from simdistill_ros.core.config import GeometryConfig


def image_aug_matrix(
    scale_xy: tuple[float, float],
    crop_xy: tuple[float, float],
    crop_size_wh: tuple[int, int],
    flip: bool = False,
    rotate_deg: float = 0.0,
) -> np.ndarray:
    """4x4 image-augmentation matrix: resize by scale_xy, crop at crop_xy (top-left, resized pixels)
    to crop_size_wh, optionally mirror horizontally, then rotate by rotate_deg about the crop centre
    (counter-clockwise as seen on screen, PIL's `Image.rotate` sense). Same order as BEVFusion."""
    rot = np.diag([float(scale_xy[0]), float(scale_xy[1])])
    tran = -np.asarray(crop_xy, dtype=np.float64)
    w, h = crop_size_wh
    if flip:
        A = np.array([[-1.0, 0.0], [0.0, 1.0]])
        rot = A @ rot
        tran = A @ tran + np.array([w, 0.0])
    a = math.radians(rotate_deg)
    A = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    centre = np.array([w, h], dtype=np.float64) / 2.0
    rot = A @ rot
    tran = A @ tran + (centre - A @ centre)
    out = np.eye(4)
    out[:2, :2] = rot
    out[:2, 3] = tran
    return out


def inference_image_aug(raw_size_hw: tuple[int, int], geometry: GeometryConfig) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The deterministic test-time transform for a raw image of raw_size_hw: resize to
    geometry.resize_width (aspect kept), crop to geometry.image_size bottom-aligned and centred.

    Returns (img_aug 4x4, resized size (H, W), crop top-left (x0, y0) in resized pixels).
    """
    raw_h, raw_w = raw_size_hw
    out_h, out_w = geometry.image_size
    new_w = geometry.resize_width
    new_h = int(round(raw_h * new_w / raw_w))
    if new_h < out_h:
        new_h = out_h
        new_w = max(int(round(raw_w * out_h / raw_h)), out_w)
    crop_x = (new_w - out_w) // 2
    crop_y = new_h - out_h
    aug = image_aug_matrix((new_w / raw_w, new_h / raw_h), (crop_x, crop_y), (out_w, out_h))
    return aug, (new_h, new_w), (crop_x, crop_y)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply 4x4 transforms T (... x 4 x 4) to points (... x P x 3); leading dims broadcast."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def frustum(geometry: GeometryConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """D x fH x fW x 3 grid of (u, v, depth): feature-cell centres in network-input pixels times depth bins."""
    fh, fw = geometry.feature_size
    s = geometry.feature_stride
    d = geometry.depth_min + geometry.depth_step * torch.arange(geometry.num_depth_bins, dtype=torch.float64)
    v = (torch.arange(fh, dtype=torch.float64) + 0.5) * s - 0.5
    u = (torch.arange(fw, dtype=torch.float64) + 0.5) * s - 0.5
    dd, vv, uu = torch.meshgrid(d, v, u, indexing="ij")
    return torch.stack([uu, vv, dd], dim=-1).to(dtype=dtype, device=device)


def lift_to_ego(
    frustum_dhw3: Tensor,
    K_bn33: Tensor,
    cam_to_ego_bn44: Tensor,
    img_aug_bn44: Tensor,
    bev_aug_b44: Tensor | None = None,
) -> Tensor:
    """Lift frustum points (u, v, depth) of network-input images to the (augmented) ego frame.

    Returns B x N x D x fH x fW x 3 points in metres.
    """
    B, N = K_bn33.shape[:2]
    D, H, W, _ = frustum_dhw3.shape
    pts = frustum_dhw3.reshape(1, 1, -1, 3).to(K_bn33.dtype)
    # undo the image augmentation: (u', v') = A (u, v) + t  =>  (u, v) = A^-1 ((u', v') - t)
    A = img_aug_bn44[..., :2, :2]
    t = img_aug_bn44[..., :2, 3]
    uv = (pts[..., :2] - t[:, :, None, :]) @ torch.linalg.inv(A).transpose(-1, -2)
    depth = pts[..., 2:3].expand(B, N, -1, 1)
    cam = torch.cat([uv * depth, depth], dim=-1) @ torch.linalg.inv(K_bn33).transpose(-1, -2)
    ego = transform_points(cam_to_ego_bn44, cam)
    if bev_aug_b44 is not None:
        ego = transform_points(bev_aug_b44[:, None], ego)
    return ego.reshape(B, N, D, H, W, 3)


def project_to_image(
    points_ego_bnp3: Tensor,
    K_bn33: Tensor,
    cam_to_ego_bn44: Tensor,
    img_aug_bn44: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Project ego points into each camera's (augmented) image.

    points_ego_bnp3: B x N x P x 3 (or broadcastable). Returns (uv B x N x P x 2 pixels, depth B x N x P
    metres along the optical axis; points behind the camera have depth <= 0 and meaningless uv).
    """
    ego_to_cam = torch.linalg.inv(cam_to_ego_bn44)
    cam = transform_points(ego_to_cam, points_ego_bnp3)
    depth = cam[..., 2]
    pix = cam @ K_bn33.transpose(-1, -2)
    uv = pix[..., :2] / depth.clamp(min=1e-6).unsqueeze(-1)
    if img_aug_bn44 is not None:
        uv = uv @ img_aug_bn44[..., :2, :2].transpose(-1, -2) + img_aug_bn44[..., None, :2, 3]
    return uv, depth


def bev_cell_index(points_ego: Tensor, geometry: GeometryConfig) -> tuple[Tensor, Tensor]:
    """Flat BEV cell index (row * nx + col) of each point (... x 3) and whether it lies inside the
    BEV volume (x, y and z ranges). Indices of points outside are 0."""
    ny, nx = geometry.bev_size
    res = geometry.bev_resolution
    col = torch.floor((points_ego[..., 0] - geometry.x_range[0]) / res).long()
    row = torch.floor((points_ego[..., 1] - geometry.y_range[0]) / res).long()
    z = points_ego[..., 2]
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny) & (z >= geometry.z_range[0]) & (z < geometry.z_range[1])
    flat = torch.where(inside, row * nx + col, torch.zeros_like(col))
    return flat, inside

