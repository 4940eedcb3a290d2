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

Precision (mixed precision training and fp16 inference): depth probabilities and context may have
different floating dtypes (CUDA autocast keeps softmax in fp32 and gives fp16 context). Gathered
values are cast to the accumulation dtype (fp32, or fp64 when an input is fp64) before the product and
the scatter-add, in forward and in the recomputing backward, because one BEV cell sums hundreds of
points and fp16/bf16 sums lose digits (bf16 keeps 8 bits). The pooled map has the promoted input dtype;
each gradient has its input's dtype. Depth gradients are added per index (`index_add_`), so the
backward is right for any index tensors, repeated depth indices included.

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


def accumulation_dtype(depth_dtype: torch.dtype, context_dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are accumulated in: float64 if either input is float64, else float32 (so fp16 and
    bf16 inputs, e.g. under autocast, accumulate in fp32)."""
    return torch.float64 if torch.float64 in (depth_dtype, context_dtype) else torch.float32


def _check_inputs(depth: Tensor, context: Tensor, depth_index: Tensor, pixel_index: Tensor, cell_index: Tensor,
                  bev_size: tuple[int, int], channel_chunk: int) -> None:
    """ValueError naming the argument when pooling inputs do not fit together (dtype, device, rank, shape)."""
    for name, t in (("depth_probs_bndhw", depth), ("context_bnchw", context)):
        if not t.is_floating_point():
            raise ValueError(f"bev_pool: {name} must be a floating-point tensor, got {t.dtype}")
        if t.dim() != 5:
            raise ValueError(f"bev_pool: {name} must have 5 dimensions, got shape {tuple(t.shape)}")
    if depth.device != context.device:
        raise ValueError(f"bev_pool: depth_probs_bndhw is on {depth.device}, context_bnchw on {context.device}")
    if depth.shape[:2] != context.shape[:2] or depth.shape[3:] != context.shape[3:]:
        raise ValueError(f"bev_pool: depth_probs_bndhw {tuple(depth.shape)} (B x N x D x fH x fW) and context_bnchw "
                         f"{tuple(context.shape)} (B x N x C x fH x fW) disagree on B, N, fH or fW")
    for name, t in (("depth_index", depth_index), ("pixel_index", pixel_index), ("cell_index", cell_index)):
        if t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"bev_pool: {name} must be a 1-D int64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
        if t.device != context.device:
            raise ValueError(f"bev_pool: {name} is on {t.device}, the features on {context.device}")
    if not torch.compiler.is_compiling() and not (depth_index.shape[0] == pixel_index.shape[0] == cell_index.shape[0]):
        raise ValueError(f"bev_pool: index tensors differ in length: depth_index {depth_index.shape[0]}, "
                         f"pixel_index {pixel_index.shape[0]}, cell_index {cell_index.shape[0]}")
    if len(bev_size) != 2 or min(bev_size) < 1:
        raise ValueError(f"bev_pool: bev_size must be two positive sizes (ny, nx), got {bev_size}")
    if channel_chunk < 1:
        raise ValueError(f"bev_pool: channel_chunk must be >= 1, got {channel_chunk}")


def _pool_chunks(weights_p: Tensor, context_cq: Tensor, pixel_index: Tensor, cell_index: Tensor, num_cells: int,
                 channel_chunk: int) -> Tensor:
    """Sum weights_p[p] * context_cq[:, pixel_index[p]] into cell cell_index[p]; returns C x num_cells in
    weights_p's dtype (the accumulation dtype). Each context chunk is cast to it before gathering, so
    under autograd the gradient's scatter (index_select's backward) accumulates in it too."""
    outs: list[Tensor] = []
    for c0 in range(0, context_cq.shape[0], channel_chunk):
        feats_cp = context_cq[c0:c0 + channel_chunk].to(weights_p.dtype).index_select(1, pixel_index) * weights_p
        index_cp = cell_index.unsqueeze(0).expand(feats_cp.shape[0], -1)
        outs.append(feats_cp.new_zeros(feats_cp.shape[0], num_cells).scatter_add(1, index_cp, feats_cp))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


class _BEVPoolRecompute(torch.autograd.Function):
    """Channel-chunked pooling whose backward recomputes the gathered features instead of saving them.

    Sums are accumulated in `accumulation_dtype` in both directions; each gradient is returned in its
    input's dtype. Depth gradients are scattered with `index_add_`, so repeated depth indices add up."""

    @staticmethod
    def forward(ctx: Any, depth_q: Tensor, context_cq: Tensor, depth_index: Tensor, pixel_index: Tensor,
                cell_index: Tensor, num_cells: int, channel_chunk: int) -> Tensor:
        acc = accumulation_dtype(depth_q.dtype, context_cq.dtype)
        weights_p = depth_q.index_select(0, depth_index).to(acc)
        ctx.save_for_backward(weights_p, context_cq, depth_index, pixel_index, cell_index)
        ctx.depth_numel, ctx.depth_dtype = depth_q.numel(), depth_q.dtype
        ctx.channel_chunk = channel_chunk
        out = _pool_chunks(weights_p, context_cq, pixel_index, cell_index, num_cells, channel_chunk)
        return out.to(torch.promote_types(depth_q.dtype, context_cq.dtype))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_cq: Tensor) -> tuple[Tensor | None, ...]:
        weights_p, context_cq, depth_index, pixel_index, cell_index = ctx.saved_tensors
        need_depth, need_context = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc = weights_p.dtype
        grad_w = weights_p.new_zeros(weights_p.shape) if need_depth else None
        grad_context = context_cq.new_zeros(context_cq.shape, dtype=acc) if need_context else None
        step = ctx.channel_chunk
        for c0 in range(0, context_cq.shape[0], step):
            g_cp = grad_cq[c0:c0 + step].index_select(1, cell_index).to(acc)
            if grad_w is not None:
                grad_w += (g_cp * context_cq[c0:c0 + step].index_select(1, pixel_index).to(acc)).sum(0)
            if grad_context is not None:
                index_cp = pixel_index.unsqueeze(0).expand(g_cp.shape[0], -1)
                grad_context[c0:c0 + step].scatter_add_(1, index_cp, g_cp * weights_p)
        grad_depth = None
        if grad_w is not None:
            grad_depth = grad_w.new_zeros(ctx.depth_numel).index_add_(0, depth_index, grad_w).to(ctx.depth_dtype)
        if grad_context is not None:
            grad_context = grad_context.to(context_cq.dtype)
        return grad_depth, grad_context, None, None, None, None, None


def bev_pool_indices(depth_probs_bndhw: Tensor, context_bnchw: Tensor, depth_index: Tensor, pixel_index: Tensor,
                     cell_index: Tensor, bev_size: tuple[int, int], channel_chunk: int = DEFAULT_CHANNEL_CHUNK,
                     recompute_backward: bool = False) -> Tensor:
    """Sum-pool lifted features into the BEV grid: returns bev_bcyx of shape B x C x ny x nx.

    depth_probs_bndhw: B x N x D x fH x fW; context_bnchw: B x N x C x fH x fW; index tensors: P (int64)
    as in BEVPoolPlan, any values (repeats included) within range. Tensor-only (exportable) unless
    recompute_backward, which selects the memory-saving autograd Function (eager training).

    Precision: the two inputs may differ in floating dtype (autocast gives fp32 softmax depth and fp16
    context). Products and sums are computed in `accumulation_dtype` (fp32 for fp16/bf16 inputs, since
    hundreds of points can fall into one cell); the result has the promoted dtype of the two inputs
    (fp32 for fp32 depth with fp16 context, fp16 when both are fp16). Bad inputs (non-float features,
    non-int64 indices, devices or shapes that disagree) raise a ValueError naming the argument.
    """
    _check_inputs(depth_probs_bndhw, context_bnchw, depth_index, pixel_index, cell_index, bev_size, channel_chunk)
    B, N, C, H, W = context_bnchw.shape
    ny, nx = bev_size
    num_cells = B * ny * nx
    depth_q = depth_probs_bndhw.reshape(-1)
    context_cq = context_bnchw.permute(2, 0, 1, 3, 4).reshape(C, B * N * H * W)
    if recompute_backward:
        out_cq = _BEVPoolRecompute.apply(depth_q, context_cq, depth_index, pixel_index, cell_index, num_cells,
                                         channel_chunk)
    else:
        acc = accumulation_dtype(depth_q.dtype, context_cq.dtype)
        weights_p = depth_q.to(acc).index_select(0, depth_index)  # cast first: the backward adds in acc
        out_cq = _pool_chunks(weights_p, context_cq, pixel_index, cell_index, num_cells, channel_chunk)
        out_cq = out_cq.to(torch.promote_types(depth_q.dtype, context_cq.dtype))
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
