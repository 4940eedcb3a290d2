"""The view-transform plan: which (camera, depth bin, feature pixel) lands in which BEV cell.

It depends only on calibration, image augmentation and geometry, so at inference it is computed once
per calibration and cached by a hash of it (NVIDIA CUDA-BEVFusion's geometry update, BEVPoolv2's
precomputed ranks); during training it is rebuilt per sample (each sample's cam_to_ego holds its own
ego motion): one multiply-add per point and axis, no sort (docs/benchmarks.md has the timings). BEV
pooling is then a scatter-add over these indices (core/model/view_transform.py).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.geometry import frustum


@dataclass(frozen=True)
class BEVPoolPlan:
    """Precomputed indices for sum-pooling lifted camera features into the BEV grid.

    For each of P valid frustum points (in (b, n, d, h, w) order, or by BEV cell if built sorted):
      depth_index: flat index into depth probabilities of shape B x N x D x fH x fW;
      pixel_index: flat index into image features of shape B x N x fH x fW;
      cell_index:  flat index into the BEV grid of shape B x ny x nx.
    """

    depth_index: Tensor
    pixel_index: Tensor
    cell_index: Tensor
    batch_size: int
    num_cameras: int
    bev_size: tuple[int, int]

    @property
    def num_points(self) -> int:
        return int(self.cell_index.numel())

    def to(self, device: torch.device | str) -> "BEVPoolPlan":
        return BEVPoolPlan(self.depth_index.to(device), self.pixel_index.to(device), self.cell_index.to(device),
                           self.batch_size, self.num_cameras, self.bev_size)


def build_bev_pool_plan(
    geometry: GeometryConfig,
    K_bn33: Tensor,
    cam_to_ego_bn44: Tensor,
    img_aug_bn44: Tensor,
    bev_aug_b44: Tensor | None = None,
    camera_valid_bn: Tensor | None = None,
    sort_by_cell: bool = False,
) -> BEVPoolPlan:
    """Lift every frustum point, keep those inside the BEV volume (and of valid cameras), and index them.

    Every frustum point of camera n is origin_n + depth * ray_n(pixel), with the ray of a feature-cell
    centre through the inverse image augmentation, K^-1, cam_to_ego and bev_aug composed into one 3x3
    map per camera (geometry.lift_to_ego gives the same points). So the BEV cell coordinates are
    depth * a + b per axis, with a and b per (camera, pixel): one multiply-add per point and axis.
    Done in float64 so the plan does not depend on the device's float rounding. Points come in
    (b, n, d, h, w) order; sort_by_cell orders them by BEV cell (nothing in the pooling needs it).
    """
    B, N = K_bn33.shape[:2]
    D = geometry.num_depth_bins
    fh, fw = geometry.feature_size
    ny, nx = geometry.bev_size
    res = geometry.bev_resolution
    f64 = torch.float64
    device = K_bn33.device
    # pixel (u, v, 1) of every feature-cell centre in the network input, and its ray in the ego frame
    uv1 = frustum(geometry, f64, device)[0].reshape(-1, 3).clone()
    uv1[:, 2] = 1.0
    aug = img_aug_bn44.to(f64)
    A_inv = torch.linalg.inv(aug[..., :2, :2])
    undo_aug = torch.zeros(B, N, 3, 3, dtype=f64, device=device)
    undo_aug[..., :2, :2] = A_inv
    undo_aug[..., :2, 2] = -(A_inv @ aug[..., :2, 3:4])[..., 0]
    undo_aug[..., 2, 2] = 1.0
    T = cam_to_ego_bn44.to(f64)
    to_ego = T[..., :3, :3] @ torch.linalg.solve(K_bn33.to(f64), undo_aug)  # raw network pixel -> ego ray
    origin = T[..., :3, 3]
    if bev_aug_b44 is not None:
        bev = bev_aug_b44.to(f64)
        to_ego = bev[:, None, :3, :3] @ to_ego
        origin = (bev[:, None, :3, :3] @ origin[..., None])[..., 0] + bev[:, None, :3, 3]
    rays = uv1 @ to_ego.transpose(-1, -2)  # B x N x HW x 3
    depths = (geometry.depth_min + geometry.depth_step * torch.arange(D, dtype=f64, device=device))[:, None]
    lo = (geometry.x_range[0], geometry.y_range[0])

    def coordinate(axis: int, scale: float, offset: float) -> Tensor:
        """(origin + depth * ray)[axis] * scale - offset for every point: B x N x D x HW."""
        a = rays[..., axis] * scale
        b = origin[..., axis] * scale - offset
        return depths * a[:, :, None] + b[:, :, None, None]

    col = coordinate(0, 1.0 / res, lo[0] / res)
    row = coordinate(1, 1.0 / res, lo[1] / res)
    z = coordinate(2, 1.0, 0.0)
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny) & (z >= geometry.z_range[0]) & (z < geometry.z_range[1])
    if camera_valid_bn is not None:
        inside &= camera_valid_bn.to(device=device, dtype=torch.bool)[:, :, None, None]
    depth_index = torch.nonzero(inside.reshape(-1), as_tuple=False).squeeze(1)
    # the pixel and the batch's grid offset of every point by broadcasting (cheaper than dividing indices)
    bn = torch.arange(B * N, device=device).reshape(B, N, 1, 1)
    pixel_all = (bn * (fh * fw) + torch.arange(fh * fw, device=device)).expand(B, N, D, fh * fw)
    pixel_index = pixel_all.reshape(-1)[depth_index]
    # truncation is floor here: inside the grid both coordinates are >= 0
    cell_all = row.long() * nx + col.long() + (bn // N) * (ny * nx)
    cell_index = cell_all.reshape(-1)[depth_index]
    if sort_by_cell:
        order = torch.argsort(cell_index, stable=True)
        depth_index, pixel_index, cell_index = depth_index[order], pixel_index[order], cell_index[order]
    return BEVPoolPlan(depth_index, pixel_index, cell_index, B, N, (ny, nx))


def plan_key(geometry: GeometryConfig, K_n33: np.ndarray, cam_to_ego_n44: np.ndarray, img_aug_n44: np.ndarray,
             camera_valid_n: np.ndarray | None = None) -> str:
    """Hash of everything a single-sample plan depends on (values rounded to 1e-6; -0.0 counts as 0.0)."""
    h = hashlib.sha1(repr(geometry).encode())
    for arr in (K_n33, cam_to_ego_n44, img_aug_n44):
        # + 0.0 turns -0.0 (what a tiny negative value rounds to) into 0.0: their bytes differ
        h.update((np.round(np.asarray(arr, dtype=np.float64), 6) + 0.0).tobytes())
    if camera_valid_n is not None:
        h.update(np.asarray(camera_valid_n, dtype=bool).tobytes())
    return h.hexdigest()


class PlanCache:
    """LRU cache of single-sample plans keyed by `plan_key`; counts hits and rebuilds."""

    def __init__(self, geometry: GeometryConfig, device: torch.device | str = "cpu", capacity: int = 4) -> None:
        self.geometry = geometry
        self.device = torch.device(device)
        self.capacity = capacity
        self._plans: OrderedDict[str, BEVPoolPlan] = OrderedDict()
        self.builds = 0
        self.hits = 0

    def get(self, K_n33: np.ndarray, cam_to_ego_n44: np.ndarray, img_aug_n44: np.ndarray,
            camera_valid_n: np.ndarray | None = None) -> BEVPoolPlan:
        key = plan_key(self.geometry, K_n33, cam_to_ego_n44, img_aug_n44, camera_valid_n)
        plan = self._plans.get(key)
        if plan is not None:
            self.hits += 1
            self._plans.move_to_end(key)
            return plan

        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64))[None]

        valid = None if camera_valid_n is None else torch.as_tensor(np.asarray(camera_valid_n, dtype=bool))[None]
        plan = build_bev_pool_plan(self.geometry, t(K_n33), t(cam_to_ego_n44), t(img_aug_n44), None, valid).to(self.device)
        self.builds += 1
        self._plans[key] = plan
        while len(self._plans) > self.capacity:
            self._plans.popitem(last=False)
        return plan
