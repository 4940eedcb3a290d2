"""LiDAR depth targets for the optional depth supervision of camera depth distributions (method.md
section 6, BEVDepth-style), built per batch on the training device.

Key-frame points (dt == 0) are mapped back from the augmented ego frame (inverse bev_aug), projected
into each camera's network-input image (core.geometry.project_to_image with img_aug), and assigned to
the feature cell whose frustum ray is nearest (the frustum's own pixel centres and stride); each cell
keeps its nearest point (BEVDepth's min-pooling). The depth is binned by the nearest frustum depth
d_k = depth_min + k * depth_step (the depth at which the view transform lifts bin k), not by floor.
"""
from __future__ import annotations

import torch
from torch import Tensor

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import frustum, project_to_image, transform_points


def lidar_depth_bins(points_bp5: Tensor, num_points_b: Tensor, K_bn33: Tensor, cam_to_ego_bn44: Tensor,
                     img_aug_bn44: Tensor, bev_aug_b44: Tensor, geometry: GeometryConfig) -> Tensor:
    """B x N x fH x fW int64 depth-bin index of the nearest key-frame LiDAR point per feature cell,
    -1 where no point projects. points_bp5: (x, y, z, intensity, dt) in the augmented ego frame,
    padded; num_points_b: valid points per sample."""
    B, P = points_bp5.shape[:2]
    N = K_bn33.shape[1]
    fh, fw = geometry.feature_size
    D = geometry.num_depth_bins
    device = points_bp5.device
    f64 = torch.float64
    fr = frustum(geometry, f64, device)
    u0, v0, d0 = fr[0, 0, 0, 0], fr[0, 0, 0, 1], fr[0, 0, 0, 2]
    stride = float(geometry.feature_stride)

    valid = (torch.arange(P, device=device)[None] < num_points_b[:, None]) & (points_bp5[..., 4] == 0)
    ego = transform_points(torch.linalg.inv(bev_aug_b44.to(f64)), points_bp5[..., :3].to(f64))  # B x P x 3
    uv, depth = project_to_image(ego[:, None], K_bn33.to(f64), cam_to_ego_bn44.to(f64), img_aug_bn44.to(f64))
    col = torch.round((uv[..., 0] - u0) / stride).long()
    row = torch.round((uv[..., 1] - v0) / stride).long()
    inside = valid[:, None] & (depth > 1e-3) & (col >= 0) & (col < fw) & (row >= 0) & (row < fh)
    cam = torch.arange(B * N, device=device).reshape(B, N, 1)
    flat = (cam * fh + row.clamp(0, fh - 1)) * fw + col.clamp(0, fw - 1)
    nearest = torch.full((B * N * fh * fw,), float("inf"), dtype=f64, device=device)
    nearest.scatter_reduce_(0, flat[inside], depth[inside], reduce="amin", include_self=True)
    bins = torch.round((nearest - d0) / geometry.depth_step)
    ok = torch.isfinite(nearest) & (bins >= 0) & (bins < D)
    out = torch.where(ok, bins, torch.full_like(bins, -1)).long()
    return out.reshape(B, N, fh, fw)
