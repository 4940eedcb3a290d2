"""FPN-style image neck (BEVFusion's GeneralizedLSSFPN): fuse C3, C4, C5 into one stride-8 map.

Top-down: P4 = conv3x3(conv1x1(cat[C4, up(C5)])), P3 = conv3x3(conv1x1(cat[C3, up(P4)])); each conv is
followed by BatchNorm and ReLU; upsampling is bilinear (align_corners=False) to the finer map's size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LSSFPNNeck(nn.Module):
    """in_channels: channels of (C3, C4, C5); out_channels: channels of the stride-8 output."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.lateral4 = conv_bn_relu(c4 + c5, out_channels, 1)
        self.fpn4 = conv_bn_relu(out_channels, out_channels, 3)
        self.lateral3 = conv_bn_relu(c3 + out_channels, out_channels, 1)
        self.fpn3 = conv_bn_relu(out_channels, out_channels, 3)
        self.out_channels = out_channels

    @staticmethod
    def _up_cat(fine_bchw: Tensor, coarse_bchw: Tensor) -> Tensor:
        up = F.interpolate(coarse_bchw, size=fine_bchw.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([fine_bchw, up], dim=1)

    def forward(self, c3_bchw: Tensor, c4_bchw: Tensor, c5_bchw: Tensor) -> Tensor:
        """Returns B x out_channels x H/8 x W/8."""
        p4 = self.fpn4(self.lateral4(self._up_cat(c4_bchw, c5_bchw)))
        return self.fpn3(self.lateral3(self._up_cat(c3_bchw, p4)))
