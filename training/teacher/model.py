"""The LiDAR+camera teacher (method.md section 4), built from the core modules so it has the student's
shapes at every distilled level:

  images -> ResNet + FPN neck -> one LSS view transform -> T_c   (context_channels, head grid)
  points -> LiDAR branch (pillars)                      -> T_l   (lidar_channels, head grid)
  ConvFuser([T_c, T_l]) -> T_f (fuser_channels) -> BEV decoder -> CenterHead (same task groups)

T_c is the target of IMD, T_l of CMD, T_f of MMD-F and the heads of MMD-P. Its image encoder (backbone
and neck, the student's module classes) initialises the student's.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from simdistill_ros.core.config import GeometryConfig, ModelConfig
from simdistill_ros.core.model.backbone import ResNet
from simdistill_ros.core.model.fuser import ConvFuser
from simdistill_ros.core.model.neck import LSSFPNNeck
from simdistill_ros.core.model.student import FEATURE_STRIDE, build_bev_decoder, build_center_head, encode_images
from simdistill_ros.core.model.view_transform import LSSViewTransform
from simdistill_ros.core.view_plan import BEVPoolPlan
from training.config import LidarConfig
from training.teacher.lidar import LidarBranch


class TeacherOutputs(NamedTuple):
    """camera_bev T_c B x C x Hh x Wh; lidar_bev T_l B x lidar x Hh x Wh; fused_bev T_f B x fuser x Hh x Wh;
    depth_probs B x N x D x fH x fW; heads: one B x (10 + n_cls_t) x Hh x Wh tensor per task."""

    camera_bev: Tensor
    lidar_bev: Tensor
    fused_bev: Tensor
    depth_probs: Tensor
    heads: tuple[Tensor, ...]


class Teacher(nn.Module):
    """LiDAR+camera teacher for `config` (shapes), `geometry` (grids) and `lidar` (LiDAR branch)."""

    def __init__(self, config: ModelConfig, geometry: GeometryConfig, lidar: LidarConfig) -> None:
        super().__init__()
        if geometry.feature_stride != FEATURE_STRIDE:
            raise ValueError(f"the image neck outputs stride {FEATURE_STRIDE}; geometry.feature_stride is "
                             f"{geometry.feature_stride}")
        self.config = config
        self.geometry = geometry
        self.lidar_config = lidar
        C = config.context_channels
        self.backbone = ResNet(config.backbone_depth, config.backbone_width)
        self.neck = LSSFPNNeck(self.backbone.out_channels, config.neck_channels)
        self.view_transform = LSSViewTransform(config.neck_channels, C, geometry.num_depth_bins, geometry.bev_size,
                                               geometry.bev_downsample)
        self.lidar = LidarBranch(geometry, lidar.pillar_channels, config.lidar_channels, lidar.encoder_blocks)
        self.fuser = ConvFuser((C, config.lidar_channels), config.fuser_channels)
        self.decoder = build_bev_decoder(config)
        self.head = build_center_head(config)

    def encode_images(self, images_bn3hw: Tensor) -> Tensor:
        """Normalised images B x N x 3 x H x W -> image features B x N x neck x H/8 x W/8."""
        return encode_images(self.backbone, self.neck, images_bn3hw)

    def forward_train(self, images_bn3hw: Tensor, plan: BEVPoolPlan, points_bp5: Tensor,
                      num_points_b: Tensor) -> TeacherOutputs:
        """All distillation targets. points_bp5: B x P x 5 (x, y, z, intensity, dt) in the (augmented)
        ego frame of the plan, padded; num_points_b: valid points per sample."""
        B, N = images_bn3hw.shape[:2]
        if (B, N) != (plan.batch_size, plan.num_cameras) or plan.bev_size != self.geometry.bev_size:
            raise ValueError(f"plan is for (B, N, bev) = {(plan.batch_size, plan.num_cameras, plan.bev_size)}, "
                             f"images/geometry give {(B, N, self.geometry.bev_size)}")
        if points_bp5.shape[0] != B or num_points_b.shape != (B,):
            raise ValueError(f"points are for batch {points_bp5.shape[0]} ({tuple(num_points_b.shape)} counts), "
                             f"images for {B}")
        feats = self.encode_images(images_bn3hw)
        camera, depth = self.view_transform(feats, plan.depth_index, plan.pixel_index, plan.cell_index,
                                            recompute_backward=True)
        lidar = self.lidar(points_bp5, num_points_b)
        fused = self.fuser(camera, lidar)
        return TeacherOutputs(camera, lidar, fused, depth, self.head(self.decoder(fused)))

    def forward(self, images_bn3hw: Tensor, plan: BEVPoolPlan, points_bp5: Tensor,
                num_points_b: Tensor) -> tuple[Tensor, ...]:
        """Raw head tensors (one per task)."""
        return self.forward_train(images_bn3hw, plan, points_bp5, num_points_b).heads

    def image_encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.neck.parameters()]
