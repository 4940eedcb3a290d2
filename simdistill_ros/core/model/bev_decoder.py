"""BEV decoder (BEVFusion camera/LiDAR "decoder"): GeneralizedResNet backbone + LSSFPN neck.

Three residual stages (BasicBlocks) with channels decoder_channels = (c0, c1, c2) at strides 2, 4, 4 of
the head grid (2 blocks each, as BEVFusion's [[2, 128, 2], [2, 256, 2], [2, 512, 1]]). The FPN upsamples
the last stage to the first (bilinear, align_corners=True), concatenates [c2, c0], applies
Conv1x1 -> Conv3x3 to `out_channels`, upsamples x2 back to the head grid and applies a last Conv3x3
(BEVFusion LSSFPN with in_indices [-1, 0], scale_factor 2). Every conv is followed by BN + ReLU.
The student uses out_channels = fuser_channels (256 at paper scale, which equals 2 * c0 there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simdistill_ros.core.model.backbone import BasicBlock, conv1x1
from simdistill_ros.core.model.neck import conv_bn_relu


def residual_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    """num_blocks BasicBlocks; the first one strides and projects the shortcut when needed."""
    downsample: nn.Module | None = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks: list[nn.Module] = [BasicBlock(in_channels, out_channels, stride, downsample)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class BEVDecoder(nn.Module):
    """in_channels: fused BEV channels; decoder_channels: stage widths; out_channels: output channels.
    forward: B x in_channels x H x W -> B x out_channels x H x W (H, W divisible by 4)."""

    def __init__(self, in_channels: int, decoder_channels: tuple[int, int, int], out_channels: int,
                 blocks_per_stage: int = 2) -> None:
        super().__init__()
        c0, c1, c2 = decoder_channels
        self.stage1 = residual_stage(in_channels, c0, blocks_per_stage, stride=2)
        self.stage2 = residual_stage(c0, c1, blocks_per_stage, stride=2)
        self.stage3 = residual_stage(c1, c2, blocks_per_stage, stride=1)
        self.fuse = nn.Sequential(conv_bn_relu(c2 + c0, out_channels, 1), conv_bn_relu(out_channels, out_channels, 3))
        self.out = conv_bn_relu(out_channels, out_channels, 3)
        self.out_channels = out_channels

    def forward(self, bev_bchw: Tensor) -> Tensor:
        x1 = self.stage1(bev_bchw)
        x3 = self.stage3(self.stage2(x1))
        up = F.interpolate(x3, size=x1.shape[-2:], mode="bilinear", align_corners=True)
        x = self.fuse(torch.cat([up, x1], dim=1))
        x = F.interpolate(x, size=bev_bchw.shape[-2:], mode="bilinear", align_corners=True)
        return self.out(x)
