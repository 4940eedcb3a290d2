"""`simdistill bench`: median latency per stage and end to end, peak memory, and BEV pooling against a
naive full-volume reference, for a preset on CPU or CUDA, and the same network on other backends.

Weights are random (latency does not depend on them); inputs are six random 900x1600 uint8 images on a
nuScenes-like rig. Every stage is timed with device synchronisation after warm-up; figures are medians.
The eager torch backend is always measured (per stage); `--backend` adds compiled, cudagraph,
onnxruntime and tensorrt (an ONNX export of the same weights, into a temporary folder). Their network
and end-to-end times are measured interleaved with eager torch, iteration by iteration, so the ratios
hold on a shared machine whose load drifts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from simdistill_ros.core.config import GeometryConfig, load_preset
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.model.view_transform import DEFAULT_CHANNEL_CHUNK, bev_pool
from simdistill_ros.core.postprocess import decode
from simdistill_ros.core.rig import random_frame
from simdistill_ros.core.types import Frame
from simdistill_ros.core.view_plan import BEVPoolPlan, build_bev_pool_plan

def _timer(device: torch.device, fn: Callable[[], Any], warmup: int, iters: int) -> tuple[float, Any]:
    """Median wall time (ms) of fn over iters runs after warmup runs, synchronising the device."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def naive_bev_pool(depth_bndhw: torch.Tensor, context_bnchw: torch.Tensor, plan: BEVPoolPlan) -> torch.Tensor:
    """Reference pooling that materialises the full B x N x D x fH x fW x C frustum volume (LSS's way)."""
    B, N, D, H, W = depth_bndhw.shape
    C = context_bnchw.shape[2]
    volume = depth_bndhw.unsqueeze(-1) * context_bnchw.permute(0, 1, 3, 4, 2).unsqueeze(2)  # B N D H W C
    points = volume.reshape(-1, C)[plan.depth_index]
    ny, nx = plan.bev_size
    out = torch.zeros(B * ny * nx, C, dtype=volume.dtype, device=volume.device)
    out.index_add_(0, plan.cell_index, points)
    return out.reshape(B, ny, nx, C).permute(0, 3, 1, 2)


def run_bench(preset: str, device_name: str, precision: str, warmup: int, iters: int,
              backends: tuple[str, ...] = ()) -> dict[str, Any]:
    config = load_preset(preset)
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    torch.manual_seed(0)
    detector = Detector(Student(config.model, config.geometry), config, device=device, precision=precision)
    model = detector.model
    frame = random_frame(config.model.camera_names, seed=0)
    g = config.geometry
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = _peak_rss_mib()

    img_aug = detector.image_augs(frame)
    plan = detector.plan_for(frame, img_aug)
    stages: dict[str, float] = {}
    with torch.inference_mode(), detector.autocast():
        stages["preprocess"], images = _timer(device, lambda: detector.preprocess(frame, img_aug), warmup, iters)
        stages["plan_build"], _ = _timer(device, lambda: _build_plan(frame, img_aug, g, device), warmup, iters)
        stages["image_encoder"], feats = _timer(device, lambda: model.encode_images(images), warmup, iters)
        stages["view_transforms"], (bev_a, bev_c, _, _) = _timer(
            device, lambda: model.view_transforms(feats, plan.depth_index, plan.pixel_index, plan.cell_index),
            warmup, iters)
        stages["gcm"], bev_l = _timer(device, lambda: model.compensate_geometry(bev_a), warmup, iters)
        stages["fuser"], fused = _timer(device, lambda: model.fuse(bev_l, bev_c), warmup, iters)
        stages["bev_decoder"], decoded = _timer(device, lambda: model.decode(fused), warmup, iters)
        stages["head"], heads = _timer(device, lambda: model.predict(decoded), warmup, iters)
        heads = tuple(h.float() for h in heads)
        stages["postprocess"], _ = _timer(
            device, lambda: decode(heads, config.model.tasks, g, detector.postprocess), warmup, iters)
        stages["network"], _ = _timer(
            device, lambda: model(images, plan.depth_index, plan.pixel_index, plan.cell_index), warmup, iters)
    end_to_end, det = _timer(device, lambda: detector.detect(frame), warmup, iters)
    memory: dict[str, float] = {"process_peak_rss_MiB": _peak_rss_mib(), "rss_growth_MiB": _peak_rss_mib() - rss0}
    if device.type == "cuda":
        memory["peak_allocated_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20

    # BEV pooling alone: ours (gather valid points + scatter_add) vs the naive full-volume reference
    B, N = 1, config.model.num_cameras
    D, (fh, fw), C = g.num_depth_bins, g.feature_size, config.model.context_channels
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    depth = torch.softmax(torch.randn(B, N, D, fh, fw, device=device), dim=2).to(dtype)
    ctx = torch.randn(B, N, C, fh, fw, device=device).to(dtype)
    with torch.inference_mode():
        pool_ms, ours, ours_mib = _timed_with_peak(device, lambda: bev_pool(depth, ctx, plan), warmup, iters)
        naive_ms, ref, naive_mib = _timed_with_peak(device, lambda: naive_bev_pool(depth, ctx, plan), warmup,
                                                    max(3, iters // 3))
    elt = depth.element_size()
    floor_bytes = (depth.numel() + ctx.numel()) * elt + C * plan.bev_size[0] * plan.bev_size[1] * elt
    pool = {
        "ms": pool_ms, "naive_ms": naive_ms, "speedup_vs_naive": naive_ms / pool_ms,
        "max_abs_diff_vs_naive": float((ours.float() - ref.float()).abs().max()),
        "points": plan.num_points, "volume_points": B * N * D * fh * fw,
        "floor_bytes": floor_bytes, "effective_GBps_at_floor": floor_bytes / (pool_ms * 1e-3) / 1e9,
        "largest_intermediate_bytes": 2 * DEFAULT_CHANNEL_CHUNK * plan.num_points * elt,
        "naive_volume_bytes": B * N * D * fh * fw * C * elt,
        "peak_growth_MiB": ours_mib, "naive_peak_growth_MiB": naive_mib,
    }
    result = {
        "preset": preset, "device": device_name, "precision": precision,
        "machine": _machine(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "warmup": warmup, "iters": iters, "stages_ms": stages, "end_to_end_ms": end_to_end,
        "end_to_end_breakdown_ms": det.timings_ms, "bev_pool": pool, "memory": memory,
        "input": {"cameras": N, "raw_image": [900, 1600], "network_input": list(g.image_size)},
    }
    if backends:
        from simdistill_ros.bench_backends import compare_backends

        result["backends"] = compare_backends(detector, frame, backends, warmup, iters)
    return result


def _build_plan(frame: Frame, img_aug: np.ndarray, g: GeometryConfig, device: torch.device) -> BEVPoolPlan:
    """A plan rebuilt from scratch on `device` (what ego-motion compensation costs every frame)."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)[None]

    return build_bev_pool_plan(g, t(np.stack([c.K for c in frame.calibrations])),
                               t(np.stack([c.cam_to_ego for c in frame.calibrations])), t(img_aug))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_with_peak(device: torch.device, fn: Callable[[], Any], warmup: int,
                     iters: int) -> tuple[float, Any, float | None]:
    """_timer plus the peak memory allocated while fn runs, above what was allocated before (CUDA only:
    the CPU allocator keeps no such statistic, and the process peak RSS only shows growth past the
    earlier peak, so None on CPU)."""
    if device.type != "cuda":
        ms, out = _timer(device, fn, warmup, iters)
        return ms, out, None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    ms, out = _timer(device, fn, warmup, iters)
    return ms, out, (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} ({platform.system()})"


def print_table(result: dict[str, Any]) -> None:
    print(f"simdistill bench  preset={result['preset']}  device={result['device']} ({result['machine']})  "
          f"precision={result['precision']}  torch {result['torch']}  median of {result['iters']}")
    print(f"{'stage':<18}{'ms':>10}")
    for name, ms in result["stages_ms"].items():
        print(f"{name:<18}{ms:>10.2f}")
    print(f"{'end to end':<18}{result['end_to_end_ms']:>10.2f}")
    p = result["bev_pool"]
    print(f"BEV pooling: {p['ms']:.2f} ms (naive full volume {p['naive_ms']:.2f} ms, x{p['speedup_vs_naive']:.1f}), "
          f"{p['points']} of {p['volume_points']} frustum points, max |diff| {p['max_abs_diff_vs_naive']:.2e}, "
          f"{p['effective_GBps_at_floor']:.1f} GB/s at the traffic floor")
    if p["peak_growth_MiB"] is not None:
        print(f"BEV pooling peak memory: {p['peak_growth_MiB']:.0f} MiB (naive {p['naive_peak_growth_MiB']:.0f} MiB)")
    print(f"BEV pooling largest intermediate: {p['largest_intermediate_bytes'] / 2**20:.0f} MiB "
          f"(naive full volume {p['naive_volume_bytes'] / 2**20:.0f} MiB)")
    print("memory: " + ", ".join(f"{k} {v:.0f}" for k, v in result["memory"].items()))
    if "backends" in result:
        from simdistill_ros.bench_backends import print_backends

        print_backends(result["backends"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="tiny, r50 or a preset YAML path (default tiny)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--fp16", action="store_true", help="same as --precision fp16")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                        help="fp32 (default), fp16 (CUDA autocast) or bf16 (autocast, CPU or CUDA)")
    parser.add_argument("--backend", default="torch",
                        help="torch (per stage), or also compiled, cudagraph, onnxruntime, tensorrt, a "
                             "comma-separated list of them, or all")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the result as JSON here")


def main(args: argparse.Namespace) -> int:
    from simdistill_ros.bench_backends import parse_backends

    if args.fp16 and args.precision not in (None, "fp16"):
        raise ValueError(f"--fp16 contradicts --precision {args.precision}")
    precision = "fp16" if args.fp16 else (args.precision or "fp32")
    if precision == "fp16" and not str(args.device).startswith("cuda"):
        raise ValueError("--fp16 needs --device cuda")
    result = run_bench(args.preset, args.device, precision, args.warmup, args.iters, parse_backends(args.backend))
    print_table(result)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)
    return 0
