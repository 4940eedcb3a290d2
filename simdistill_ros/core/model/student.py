"""The SimDistill student (method.md section 5): the camera-only network deployed on the robot.

images -> image encoder (ResNet + FPN neck, shared) -> F2d
F2d -> view transform A (LSS) -> S_a -> GCM -> S_l      "simulated LiDAR BEV"
F2d -> view transform B (LSS) -> S_c                     "camera BEV"   (A and B: independent modules)
fuser([S_l, S_c]) -> F_s -> BEV decoder -> CenterHead    raw head tensors, one per task
proj(S_l) -> P_l                                         only for the CMD loss in training

`forward` takes tensors only (images and the three index tensors of a BEVPoolPlan) so it exports to
ONNX; `forward_train` returns every intermediate the distillation losses need. Both compose the same
stage methods (encode_images, view_transforms, compensate_geometry, fuse, decode, predict), which a
benchmark can also time one by one.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from torch import Tensor, nn

from simdistill_ros.core.config import GeometryConfig, ModelConfig
from simdistill_ros.core.model.backbone import ResNet
from simdistill_ros.core.model.bev_decoder import BEVDecoder
from simdistill_ros.core.model.fuser import ConvFuser
from simdistill_ros.core.model.gcm import GeometryCompensation
from simdistill_ros.core.model.head import CenterHead
from simdistill_ros.core.model.neck import LSSFPNNeck, conv_bn_relu
from simdistill_ros.core.model.view_transform import LSSViewTransform
from simdistill_ros.core.view_plan import BEVPoolPlan

FEATURE_STRIDE = 8


class StudentOutputs(NamedTuple):
    """Training outputs. BEV maps are at the head grid (Hh x Wh = geometry.head_size).

    camera_bev: S_c, B x context x Hh x Wh.  sim_lidar_bev: S_l, B x context x Hh x Wh.
    sim_lidar_proj: P_l = proj(S_l), B x lidar_channels x Hh x Wh.  fused_bev: F_s, B x fuser x Hh x Wh.
    depth_probs_a / depth_probs_c: B x N x D x fH x fW of view transforms A and B.
    heads: one B x (10 + n_cls_t) x Hh x Wh tensor per task (see head.py).
    """

    camera_bev: Tensor
    sim_lidar_bev: Tensor
    sim_lidar_proj: Tensor
    fused_bev: Tensor
    depth_probs_a: Tensor
    depth_probs_c: Tensor
    heads: tuple[Tensor, ...]


def encode_images(backbone: ResNet, neck: LSSFPNNeck, images_bn3hw: Tensor) -> Tensor:
    """The image encoder shared in shape by student and teacher: images B x N x 3 x H x W, all cameras
    through the backbone and neck as one batch -> features B x N x neck x H/8 x W/8."""
    B, N, _, H, W = images_bn3hw.shape
    feats = neck(*backbone(images_bn3hw.reshape(B * N, 3, H, W)))
    return feats.reshape(B, N, *feats.shape[1:])


def build_bev_decoder(config: ModelConfig) -> BEVDecoder:
    """The BEV decoder shared in shape by student and teacher: fuser_channels in and out."""
    return BEVDecoder(config.fuser_channels, config.decoder_channels, config.fuser_channels)


def build_center_head(config: ModelConfig) -> CenterHead:
    """The CenterHead shared in shape by student and teacher (input: the decoder's fuser_channels)."""
    return CenterHead(config.fuser_channels, config.head_channels, tuple(len(t.class_names) for t in config.tasks))


class Student(nn.Module):
    """Camera-only SimDistill student for `config` (shapes) and `geometry` (image and BEV grids)."""

    def __init__(self, config: ModelConfig, geometry: GeometryConfig) -> None:
        super().__init__()
        if geometry.feature_stride != FEATURE_STRIDE:
            raise ValueError(f"the student's neck outputs stride {FEATURE_STRIDE}; "
                             f"geometry.feature_stride is {geometry.feature_stride}")
        self.config = config
        self.geometry = geometry
        C = config.context_channels
        self.backbone = ResNet(config.backbone_depth, config.backbone_width)
        self.neck = LSSFPNNeck(self.backbone.out_channels, config.neck_channels)

        def view_transform() -> LSSViewTransform:
            return LSSViewTransform(config.neck_channels, C, geometry.num_depth_bins, geometry.bev_size,
                                    geometry.bev_downsample)

        self.view_transform_a = view_transform()
        self.view_transform_c = view_transform()
        self.gcm = GeometryCompensation(C, config.gcm.num_heads, config.gcm.num_points, geometry.head_size)
        self.fuser = ConvFuser((C, C), config.fuser_channels)
        self.decoder = build_bev_decoder(config)
        self.head = build_center_head(config)
        self.proj = conv_bn_relu(C, config.lidar_channels, 3)

    # ---- stages -------------------------------------------------------------------------------
    def encode_images(self, images_bn3hw: Tensor) -> Tensor:
        """Normalised images B x N x 3 x H x W -> image features B x N x neck x H/8 x W/8."""
        return encode_images(self.backbone, self.neck, images_bn3hw)

    def view_transforms(self, feats_bnchw: Tensor, depth_index: Tensor, pixel_index: Tensor, cell_index: Tensor,
                        recompute_backward: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both LSS branches: (S_a, S_c, depth_probs_a, depth_probs_c)."""
        s_a, depth_a = self.view_transform_a(feats_bnchw, depth_index, pixel_index, cell_index, recompute_backward)
        s_c, depth_c = self.view_transform_c(feats_bnchw, depth_index, pixel_index, cell_index, recompute_backward)
        return s_a, s_c, depth_a, depth_c

    def compensate_geometry(self, s_a_bchw: Tensor) -> Tensor:
        """GCM: S_l = S_a + DA(S_a)."""
        return self.gcm(s_a_bchw)

    def fuse(self, s_l_bchw: Tensor, s_c_bchw: Tensor) -> Tensor:
        """F_s = fuser([S_l, S_c])."""
        return self.fuser(s_l_bchw, s_c_bchw)

    def decode(self, fused_bchw: Tensor) -> Tensor:
        return self.decoder(fused_bchw)

    def predict(self, decoded_bchw: Tensor) -> tuple[Tensor, ...]:
        """CenterHead: one B x (10 + n_cls_t) x Hh x Wh tensor per task."""
        return self.head(decoded_bchw)

    # ---- entry points -------------------------------------------------------------------------
    def forward(self, images_bn3hw: Tensor, depth_index: Tensor, pixel_index: Tensor,
                cell_index: Tensor) -> tuple[Tensor, ...]:
        """Raw head tensors (one per task). Index tensors: a BEVPoolPlan's, built for B = images' batch."""
        feats = self.encode_images(images_bn3hw)
        s_a, s_c, _, _ = self.view_transforms(feats, depth_index, pixel_index, cell_index)
        return self.predict(self.decode(self.fuse(self.compensate_geometry(s_a), s_c)))

    def forward_train(self, images_bn3hw: Tensor, plan: BEVPoolPlan) -> StudentOutputs:
        """All intermediates for the distillation losses; heads equal `forward`'s."""
        B, N = images_bn3hw.shape[:2]
        if (B, N) != (plan.batch_size, plan.num_cameras) or plan.bev_size != self.geometry.bev_size:
            raise ValueError(f"plan is for (B, N, bev) = {(plan.batch_size, plan.num_cameras, plan.bev_size)}, "
                             f"images/geometry give {(B, N, self.geometry.bev_size)}")
        feats = self.encode_images(images_bn3hw)
        s_a, s_c, depth_a, depth_c = self.view_transforms(feats, plan.depth_index, plan.pixel_index, plan.cell_index,
                                                          recompute_backward=True)
        s_l = self.compensate_geometry(s_a)
        fused = self.fuse(s_l, s_c)
        heads = self.predict(self.decode(fused))
        return StudentOutputs(s_c, s_l, self.proj(s_l), fused, depth_a, depth_c, heads)

    # ---- parameter groups ---------------------------------------------------------------------
    def image_encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Backbone and neck parameters (trained at lr x 0.1)."""
        yield from self.backbone.parameters()
        yield from self.neck.parameters()

    def other_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter not in the image encoder."""
        encoder = {id(p) for p in self.image_encoder_parameters()}
        for p in self.parameters():
            if id(p) not in encoder:
                yield p
