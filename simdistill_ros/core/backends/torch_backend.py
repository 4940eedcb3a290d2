"""The PyTorch backends: the eager reference, torch.compile, and CUDA graphs.

`TorchBackend` runs the Student itself, optionally under fp16/bf16 autocast and with channels-last
weights. Its `compiled` and `cudagraph` modes need static shapes, but the number of valid frustum
points P changes with the calibration, so the plan's index tensors are padded to a multiple of
`bucket`: padded points scatter into one extra BEV row (row ny, cell ny*nx of a (ny + 1) x nx grid)
that is cut off before the BEV downsample, so they change nothing (`padded_forward`; tested equal to
`Student.forward`). One compiled graph / captured CUDA graph is kept per padded length.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import Tensor

from simdistill_ros.core.backends.base import (AUTOCAST_DTYPES, BackendUnavailableError, InferenceBackend,
                                               check_precision)
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.model.view_transform import LSSViewTransform, bev_pool_indices
from simdistill_ros.core.view_plan import BEVPoolPlan

DEFAULT_BUCKET = 1 << 16
MODES: tuple[str, ...] = ("torch", "compiled", "cudagraph")

Indices = tuple[Tensor, Tensor, Tensor]


def padded_length(num_points: int, bucket: int) -> int:
    """P rounded up to a whole, non-zero number of buckets."""
    if bucket < 1:
        raise ValueError(f"bucket must be >= 1, got {bucket}")
    return max(1, -(-num_points // bucket)) * bucket


def pad_plan(plan: BEVPoolPlan, length: int) -> Indices:
    """The plan's (depth, pixel, cell) indices padded to `length` with points that land in the dump row.

    Batch 1 only: real cells are < ny * nx, the padding goes to cell ny * nx (row ny of the padded grid);
    depth and pixel index 0 are valid for any plan."""
    if plan.batch_size != 1:
        raise ValueError(f"padded plans are for batch 1, got a plan for batch {plan.batch_size}")
    n = length - plan.num_points
    if n < 0:
        raise ValueError(f"plan has {plan.num_points} points, more than the padded length {length}")
    ny, nx = plan.bev_size
    idx = plan.cell_index
    zeros = idx.new_zeros(n)
    return (torch.cat([plan.depth_index, zeros]), torch.cat([plan.pixel_index, zeros]),
            torch.cat([idx, zeros + ny * nx]))


def _branch_padded(vt: LSSViewTransform, feats_bnchw: Tensor, indices: Indices) -> Tensor:
    """One LSS branch pooling into a (ny + 1) x nx grid whose last row takes the padding."""
    ny, nx = vt.bev_size
    depth_probs, context = vt.lift(feats_bnchw)
    bev = bev_pool_indices(depth_probs, context, *indices, (ny + 1, nx), vt.channel_chunk)
    return vt.downsample(bev[:, :, :ny])


def padded_forward(model: Student, images_bn3hw: Tensor, depth_index: Tensor, pixel_index: Tensor,
                   cell_index: Tensor) -> tuple[Tensor, ...]:
    """Student.forward for index tensors from `pad_plan` (batch 1)."""
    feats = model.encode_images(images_bn3hw)
    indices = (depth_index, pixel_index, cell_index)
    s_a = _branch_padded(model.view_transform_a, feats, indices)
    s_c = _branch_padded(model.view_transform_c, feats, indices)
    return model.predict(model.decode(model.fuse(model.compensate_geometry(s_a), s_c)))


class _CapturedGraph:
    """One CUDA graph of the padded forward with static input and output buffers."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], images: Tensor, indices: Indices) -> None:
        self.images = images.clone()
        self.indices = tuple(i.clone() for i in indices)
        stream = torch.cuda.Stream(images.device)
        stream.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the capture (cuDNN/cuBLAS workspaces, autotuning)
                fn(self.images, *self.indices)
        torch.cuda.current_stream(images.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(self.images, *self.indices)

    def __call__(self, images: Tensor, indices: Indices) -> tuple[Tensor, ...]:
        self.images.copy_(images)
        for dst, src in zip(self.indices, indices):
            dst.copy_(src)
        self.graph.replay()
        return tuple(o.clone() for o in self.outputs)


class TorchBackend(InferenceBackend):
    """The Student in PyTorch.

    mode: "torch" (eager), "compiled" (torch.compile of the padded forward) or "cudagraph" (CUDA only:
    the padded forward captured once per padded length and replayed). precision: fp32, fp16 (CUDA
    autocast) or bf16 (autocast on CPU or CUDA). channels_last: convert the weights to channels-last.
    bucket: padding granularity of the point count for compiled/cudagraph.
    """

    def __init__(self, model: Student, device: str | torch.device = "cpu", precision: str = "fp32",
                 mode: str = "torch", channels_last: bool = False, bucket: int = DEFAULT_BUCKET) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available")
        if mode not in MODES:
            raise ValueError(f"torch backend mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "cudagraph" and self.device.type != "cuda":
            raise BackendUnavailableError("backend 'cudagraph' needs a CUDA device")
        check_precision(precision, self.device, mode)
        self.name = mode
        self.precision = precision
        self.bucket = int(bucket)
        padded_length(0, self.bucket)
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = channels_last
        self._compiled: Callable[..., tuple[Tensor, ...]] | None = None
        if mode == "compiled":
            self._compiled = torch.compile(lambda *a: padded_forward(self.model, *a), dynamic=False)
        self._graphs: dict[int, _CapturedGraph] = {}
        self._padded_for: tuple[BEVPoolPlan, Indices] | None = None

    def autocast(self) -> torch.autocast | nullcontext[None]:
        """Autocast to the backend's precision on its device (a no-op for fp32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def padded(self, plan: BEVPoolPlan) -> Indices:
        """The plan's indices padded to the bucket (the last plan's are reused: plans are cached)."""
        if self._padded_for is None or self._padded_for[0] is not plan:
            self._padded_for = (plan, pad_plan(plan, padded_length(plan.num_points, self.bucket)))
        return self._padded_for[1]

    def _run_graph(self, images: Tensor, indices: Indices) -> tuple[Tensor, ...]:
        length = int(indices[0].numel())
        graph = self._graphs.get(length)
        if graph is None:
            def fn(*a: Tensor) -> tuple[Tensor, ...]:
                with self.autocast():
                    return padded_forward(self.model, *a)
            graph = self._graphs[length] = _CapturedGraph(fn, images, indices)
        return graph(images, indices)

    @torch.inference_mode()
    def __call__(self, images_bn3hw: Tensor, plan: BEVPoolPlan) -> tuple[Tensor, ...]:
        if self.name == "cudagraph":
            heads = self._run_graph(images_bn3hw, self.padded(plan))
        else:
            with self.autocast():
                if self._compiled is not None:
                    heads = self._compiled(images_bn3hw, *self.padded(plan))
                else:
                    heads = self.model(images_bn3hw, plan.depth_index, plan.pixel_index, plan.cell_index)
        return tuple(h.float() for h in heads)

    def describe(self) -> str:
        extra = ", channels_last" if self.channels_last else ""
        extra += f", bucket {self.bucket}" if self.name != "torch" else ""
        return f"{self.name} on {self.device} ({self.precision}{extra})"
