"""LSS camera-to-BEV view transform: depth distribution x context, sum-pooled into the BEV grid.

Per camera pixel the depthnet (1x1 conv) predicts D depth logits and C context channels; the lifted
feature of frustum point (d, h, w) is softmax(depth)[d] * context[:, h, w]. Pooling sums the features
of all frustum points that fall into each BEV cell, over the precomputed indices of a
`simdistill_ros.core.view_plan.BEVPoolPlan` (P valid points):
  depth_index -> B*N*D*fH*fW,  pixel_index -> B*N*fH*fW,  cell_index -> B*ny*nx.

Memory: the B x N x D x fH x fW x C volume is never built. Pooling works on `channel_chunk` channels
at a time: gather the chunk of context at the P pixels (chunk x P), scale by the P depth probabilities,
`scatter_add` into the chunk's BEV rows. The loop count depends only on C (static), so the graph exports
to ONNX (Gather, Mul, ScatterElements(add)) with a dynamic number of points P. For training,
`bev_pool` uses an autograd Function that saves only its inputs and recomputes the chunks in backward,
so no P x C activation is kept for the backward pass either.

Sizes for the r50 preset (6 cameras, 118 bins, 32 x 88 features, C = 80, P = 1.68 M valid of 1.99 M
frustum points, fp32): the full volume is 608 MiB, the gathered P x C matrix 513 MiB, one 8-channel
chunk 51 MiB (gathered, plus as much for its product). `simdistill bench --preset r50` times this
pooling against the full-volume reference and reports the volume and chunk sizes (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from simdistill_ros.core.model.neck import conv_bn_relu
from simdistill_ros.core.view_plan import BEVPoolPlan

DEFAULT_CHANNEL_CHUNK = 8


def _pool_chunks(weights_p: Tensor, context_cq: Tensor, pixel_index: Tensor, cell_index: Tensor, num_cells: int,
                 channel_chunk: int) -> Tensor:
    """Sum weights_p[p] * context_cq[:, pixel_index[p]] into cell cell_index[p]; returns C x num_cells."""
    outs: list[Tensor] = []
    for c0 in range(0, context_cq.shape[0], channel_chunk):
        feats_cp = context_cq[c0:c0 + channel_chunk].index_select(1, pixel_index) * weights_p
        index_cp = cell_index.unsqueeze(0).expand(feats_cp.shape[0], -1)
        outs.append(feats_cp.new_zeros(feats_cp.shape[0], num_cells).scatter_add(1, index_cp, feats_cp))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


class _BEVPoolRecompute(torch.autograd.Function):
    """Channel-chunked pooling whose backward recomputes the gathered features instead of saving them."""

    @staticmethod
    def forward(ctx: Any, depth_q: Tensor, context_cq: Tensor, depth_index: Tensor, pixel_index: Tensor,
                cell_index: Tensor, num_cells: int, channel_chunk: int) -> Tensor:
        weights_p = depth_q.index_select(0, depth_index)
        ctx.save_for_backward(weights_p, context_cq, depth_index, pixel_index, cell_index)
        ctx.depth_numel = depth_q.numel()
        ctx.channel_chunk = channel_chunk
        return _pool_chunks(weights_p, context_cq, pixel_index, cell_index, num_cells, channel_chunk)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_cq: Tensor) -> tuple[Tensor | None, ...]:
        weights_p, context_cq, depth_index, pixel_index, cell_index = ctx.saved_tensors
        need_depth, need_context = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_w = weights_p.new_zeros(weights_p.shape) if need_depth else None
        grad_context = torch.zeros_like(context_cq) if need_context else None
        step = ctx.channel_chunk
        for c0 in range(0, context_cq.shape[0], step):
            g_cp = grad_cq[c0:c0 + step].index_select(1, cell_index)
            if grad_w is not None:
                grad_w += (g_cp * context_cq[c0:c0 + step].index_select(1, pixel_index)).sum(0)
            if grad_context is not None:
                index_cp = pixel_index.unsqueeze(0).expand(g_cp.shape[0], -1)
                grad_context[c0:c0 + step].scatter_add_(1, index_cp, g_cp * weights_p)
        grad_depth = None
        if grad_w is not None:
            grad_depth = grad_w.new_zeros(ctx.depth_numel).index_copy_(0, depth_index, grad_w)
        return grad_depth, grad_context, None, None, None, None, None


def bev_pool_indices(depth_probs_bndhw: Tensor, context_bnchw: Tensor, depth_index: Tensor, pixel_index: Tensor,
                     cell_index: Tensor, bev_size: tuple[int, int], channel_chunk: int = DEFAULT_CHANNEL_CHUNK,
                     recompute_backward: bool = False) -> Tensor:
    """Sum-pool lifted features into the BEV grid: returns bev_bcyx of shape B x C x ny x nx.

    depth_probs_bndhw: B x N x D x fH x fW; context_bnchw: B x N x C x fH x fW; index tensors: P (int64)
    as in BEVPoolPlan. Tensor-only (exportable) unless recompute_backward, which selects the
    memory-saving autograd Function (eager training).
    """
    B, N, C, H, W = context_bnchw.shape
    ny, nx = bev_size
    num_cells = B * ny * nx
    depth_q = depth_probs_bndhw.reshape(-1)
    context_cq = context_bnchw.permute(2, 0, 1, 3, 4).reshape(C, B * N * H * W)
    if recompute_backward:
        out_cq = _BEVPoolRecompute.apply(depth_q, context_cq, depth_index, pixel_index, cell_index, num_cells,
                                         channel_chunk)
    else:
        weights_p = depth_q.index_select(0, depth_index)
        out_cq = _pool_chunks(weights_p, context_cq, pixel_index, cell_index, num_cells, channel_chunk)
    return out_cq.reshape(C, B, ny, nx).permute(1, 0, 2, 3)


def bev_pool(depth_probs_bndhw: Tensor, context_bnchw: Tensor, plan: BEVPoolPlan,
             channel_chunk: int = DEFAULT_CHANNEL_CHUNK) -> Tensor:
    """`bev_pool_indices` over a BEVPoolPlan (memory-saving backward). Returns B x C x ny x nx."""
    if depth_probs_bndhw.shape[:2] != (plan.batch_size, plan.num_cameras):
        raise ValueError(f"depth probabilities are for (B, N) = {tuple(depth_probs_bndhw.shape[:2])}, "
                         f"the plan for {(plan.batch_size, plan.num_cameras)}")
    return bev_pool_indices(depth_probs_bndhw, context_bnchw, plan.depth_index, plan.pixel_index, plan.cell_index,
                            plan.bev_size, channel_chunk, recompute_backward=True)


class LSSViewTransform(nn.Module):
    """Image features -> camera BEV map at the head grid.

    in_channels: image feature channels; context_channels: C; num_depth_bins: D;
    bev_size: (ny, nx) of the pooling grid; bev_downsample: stride of the BEV downsample (1, 2 or 4).
    """

    def __init__(self, in_channels: int, context_channels: int, num_depth_bins: int, bev_size: tuple[int, int],
                 bev_downsample: int, channel_chunk: int = DEFAULT_CHANNEL_CHUNK) -> None:
        super().__init__()
        self.context_channels = context_channels
        self.num_depth_bins = num_depth_bins
        self.bev_size = bev_size
        self.channel_chunk = channel_chunk
        self.depthnet = nn.Conv2d(in_channels, num_depth_bins + context_channels, kernel_size=1)
        C = context_channels
        self.downsample = nn.Sequential(
            conv_bn_relu(C, C, 3),
            conv_bn_relu(C, C, 3, stride=bev_downsample),
            conv_bn_relu(C, C, 3),
        )

    def lift(self, feats_bnchw: Tensor) -> tuple[Tensor, Tensor]:
        """feats B x N x Cin x fH x fW -> (depth_probs B x N x D x fH x fW, context B x N x C x fH x fW)."""
        B, N, Cin, H, W = feats_bnchw.shape
        out = self.depthnet(feats_bnchw.reshape(B * N, Cin, H, W))
        depth_probs = out[:, :self.num_depth_bins].softmax(dim=1)
        context = out[:, self.num_depth_bins:]
        return (depth_probs.reshape(B, N, self.num_depth_bins, H, W),
                context.reshape(B, N, self.context_channels, H, W))

    def forward(self, feats_bnchw: Tensor, depth_index: Tensor, pixel_index: Tensor, cell_index: Tensor,
                recompute_backward: bool = False) -> tuple[Tensor, Tensor]:
        """Returns (bev B x C x Hh x Wh at the head grid, depth_probs B x N x D x fH x fW)."""
        depth_probs, context = self.lift(feats_bnchw)
        bev = bev_pool_indices(depth_probs, context, depth_index, pixel_index, cell_index, self.bev_size,
                               self.channel_chunk, recompute_backward)
        return self.downsample(bev), depth_probs
