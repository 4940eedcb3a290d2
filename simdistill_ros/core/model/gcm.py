"""Geometry Compensation Module (method.md section 5): one deformable self-attention layer on a BEV map.

S_l = S_a + DA(S_a). Every BEV cell is a query: query = S_a + learned 2D positional embedding
(row and column embeddings, C/2 channels each); value = value_proj(S_a). For each of `num_heads`
heads and `num_points` points, sampling offsets (in cells) and attention weights (softmax over the
points; one level) are linear maps of the query. A point samples the head's value map bilinearly
(`grid_sample`, zero padding, align_corners=False) at reference point ((j + 0.5)/W, (i + 0.5)/H) plus
offset / (W, H) (Deformable DETR's convention). Output: output_proj of the weighted sum over points.

Plain `grid_sample` exports to ONNX GridSample and TensorRT. Memory: by default all points are sampled
in one call ((B * heads) x C/heads x H*W x points floats: 207 MB for r50's 8 heads x 20 points on
180 x 180 at B=1); `point_chunk` samples that many points per call and accumulates, trading speed for
memory on small devices (r50 on CPU, B=1, no grad: 4 instead of 20 points per call cut the peak from
~365 to ~275 MB but took 1.7x longer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GeometryCompensation(nn.Module):
    """channels: C of S_a (divisible by num_heads, even); bev_size: (H, W) of the map it runs on."""

    def __init__(self, channels: int, num_heads: int, num_points: int, bev_size: tuple[int, int],
                 point_chunk: int | None = None) -> None:
        super().__init__()
        if channels % num_heads != 0 or channels % 2 != 0:
            raise ValueError(f"GCM channels {channels} must be even and divisible by num_heads {num_heads}")
        self.channels = channels
        self.num_heads = num_heads
        self.num_points = num_points
        self.bev_size = bev_size
        self.point_chunk = num_points if point_chunk is None else max(1, point_chunk)
        H, W = bev_size
        self.row_embed = nn.Parameter(torch.empty(H, channels // 2))
        self.col_embed = nn.Parameter(torch.empty(W, channels // 2))
        self.sampling_offsets = nn.Linear(channels, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(channels, num_heads * num_points)
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        ys = (torch.arange(H, dtype=torch.float32) + 0.5) / H
        xs = (torch.arange(W, dtype=torch.float32) + 0.5) / W
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("reference_q2", torch.stack([xx, yy], dim=-1).reshape(H * W, 2), persistent=False)
        self.register_buffer("offset_scale_2", torch.tensor([1.0 / W, 1.0 / H]), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: offset bias along the heads' directions (the 8 compass directions with 8
        heads), point k at distance k+1 cells (square-normalised); zero offset and attention weights;
        xavier value/output projections; uniform positional embeddings."""
        nn.init.uniform_(self.row_embed)
        nn.init.uniform_(self.col_embed)
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values
        grid = grid[:, None, :].repeat(1, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def positional_embedding(self) -> Tensor:
        """H x W x C learned embedding: [column embedding, row embedding] per cell."""
        H, W = self.bev_size
        return torch.cat([self.col_embed[None, :, :].expand(H, W, -1), self.row_embed[:, None, :].expand(H, W, -1)],
                         dim=-1)

    def deformable_attention(self, bev_bchw: Tensor) -> Tensor:
        """DA(S_a): B x C x H x W -> B x C x H x W (without the residual)."""
        B, C, H, W = bev_bchw.shape
        if (H, W) != tuple(self.bev_size):
            raise ValueError(f"GCM built for a {self.bev_size} map, got {(H, W)}")
        heads, points, ch = self.num_heads, self.num_points, C // self.num_heads
        Q = H * W
        value_bqc = bev_bchw.flatten(2).transpose(1, 2)
        query_bqc = value_bqc + self.positional_embedding().reshape(1, Q, C)
        offsets = self.sampling_offsets(query_bqc).reshape(B, Q, heads, points, 2)
        weights = self.attention_weights(query_bqc).reshape(B, Q, heads, points).softmax(dim=-1)
        locations = self.reference_q2[None, :, None, None, :] + offsets * self.offset_scale_2
        grid_hqk2 = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4).reshape(B * heads, Q, points, 2)
        weights_hqk = weights.permute(0, 2, 1, 3).reshape(B * heads, 1, Q, points)
        value_hcyx = self.value_proj(value_bqc).reshape(B, Q, heads, ch).permute(0, 2, 3, 1).reshape(B * heads, ch, H, W)
        out: Tensor | None = None
        for k0 in range(0, points, self.point_chunk):
            sampled = F.grid_sample(value_hcyx, grid_hqk2[:, :, k0:k0 + self.point_chunk], mode="bilinear",
                                    padding_mode="zeros", align_corners=False)
            w = weights_hqk[..., k0:k0 + self.point_chunk]
            # in place when no graph is recorded: saves one sample-sized buffer at inference
            part = (sampled * w if torch.is_grad_enabled() else sampled.mul_(w)).sum(dim=-1)
            out = part if out is None else out + part
        assert out is not None
        out_bqc = out.reshape(B, heads, ch, Q).permute(0, 3, 1, 2).reshape(B, Q, C)
        return self.output_proj(out_bqc).transpose(1, 2).reshape(B, C, H, W)

    def forward(self, bev_bchw: Tensor) -> Tensor:
        """S_l = S_a + DA(S_a); shapes B x C x H x W."""
        return bev_bchw + self.deformable_attention(bev_bchw)
