"""The teacher's LiDAR branch: PointPillars-style pillar features on the BEV pooling grid, scattered
into a dense canvas, and a residual encoder down to a `lidar_channels` map on the head grid.

Plain PyTorch, no sparse or custom ops (method.md section 4 accepts a dense pillar encoder in place of
the paper's sparse voxel encoder). Each point (x, y, z, intensity, dt) in the augmented ego frame gets
PointPillars' decorations: its offset from the mean of its pillar's points (3) and from the pillar's
centre (2); one Linear -> BatchNorm1d -> ReLU layer maps the 10 features to pillar_channels, and the
pillar's feature is the max over its points (`scatter_reduce(amax)`, no cap on points per pillar, so
nothing is dropped). Pillars are the cells of geometry.bev_size (bev_resolution metres), rows y,
columns x, like the camera BEV grid.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from simdistill_ros.core.config import GeometryConfig
from simdistill_ros.core.model.bev_decoder import residual_stage

POINT_FEATURES = 5
DECORATED_FEATURES = POINT_FEATURES + 5


class PillarFeatureNet(nn.Module):
    """Points -> B x out_channels x ny x nx pillar canvas on geometry's pooling grid."""

    def __init__(self, geometry: GeometryConfig, out_channels: int) -> None:
        super().__init__()
        self.geometry = geometry
        self.out_channels = out_channels
        self.linear = nn.Linear(DECORATED_FEATURES, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def pillar_index(self, points_bp5: Tensor, num_points_b: Tensor) -> tuple[Tensor, Tensor]:
        """(flat pillar index b * ny * nx + row * nx + col of the kept points Q, their B x P mask)."""
        g = self.geometry
        B, P = points_bp5.shape[:2]
        ny, nx = g.bev_size
        col = torch.floor((points_bp5[..., 0] - g.x_range[0]) / g.bev_resolution).long()
        row = torch.floor((points_bp5[..., 1] - g.y_range[0]) / g.bev_resolution).long()
        keep = (torch.arange(P, device=points_bp5.device)[None] < num_points_b[:, None])
        keep &= (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
        b = torch.arange(B, device=points_bp5.device)[:, None].expand(B, P)
        return ((b * ny + row) * nx + col)[keep], keep

    def forward(self, points_bp5: Tensor, num_points_b: Tensor) -> Tensor:
        """points_bp5: B x P x 5 padded (x, y, z, intensity, dt); num_points_b: valid points per sample."""
        g = self.geometry
        B = points_bp5.shape[0]
        ny, nx = g.bev_size
        cells = B * ny * nx
        pillar, keep = self.pillar_index(points_bp5, num_points_b)
        pts = points_bp5[keep].float()  # Q x 5
        count = torch.bincount(pillar, minlength=cells).clamp_min(1).to(pts.dtype)
        mean = pts.new_zeros(cells, 3).index_add_(0, pillar, pts[:, :3]) / count[:, None]
        col = (pillar % nx).to(pts.dtype)
        row = ((pillar // nx) % ny).to(pts.dtype)
        centre_x = g.x_range[0] + (col + 0.5) * g.bev_resolution
        centre_y = g.y_range[0] + (row + 0.5) * g.bev_resolution
        decorated = torch.cat([pts, pts[:, :3] - mean[pillar], (pts[:, 0] - centre_x)[:, None],
                               (pts[:, 1] - centre_y)[:, None]], dim=1)
        feats = torch.relu(self.norm(self.linear(decorated)))  # Q x C
        canvas = feats.new_zeros(cells, self.out_channels)
        canvas = canvas.scatter_reduce(0, pillar[:, None].expand_as(feats), feats, reduce="amax", include_self=False)
        return canvas.reshape(B, ny, nx, self.out_channels).permute(0, 3, 1, 2).contiguous()


class LidarBranch(nn.Module):
    """Pillars -> two residual stages (the first strides by geometry.bev_downsample) -> T_l,
    B x lidar_channels x Hh x Wh on the head grid (the student's CMD target)."""

    def __init__(self, geometry: GeometryConfig, pillar_channels: int, lidar_channels: int, blocks: int) -> None:
        super().__init__()
        self.pillars = PillarFeatureNet(geometry, pillar_channels)
        self.stage1 = residual_stage(pillar_channels, lidar_channels, blocks, stride=geometry.bev_downsample)
        self.stage2 = residual_stage(lidar_channels, lidar_channels, blocks, stride=1)

    def forward(self, points_bp5: Tensor, num_points_b: Tensor) -> Tensor:
        return self.stage2(self.stage1(self.pillars(points_bp5, num_points_b)))
