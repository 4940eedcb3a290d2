"""The backend part of `simdistill bench`: the same weights on compiled, cudagraph, onnxruntime and
tensorrt, each timed interleaved with the eager torch reference (network alone and end to end from
uint8 images to boxes), with its set-up cost, first-call cost, peak memory and agreement with torch.

A backend that cannot run here (no CUDA, runtime not installed, precision unsupported) is recorded as
skipped with the reason, so `--backend all` runs on any machine.
"""
from __future__ import annotations

import copy
import gc
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from simdistill_ros.core.backends.base import BackendUnavailableError, InferenceBackend
from simdistill_ros.core.backends.factory import BACKENDS
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.types import Frame

OTHER_BACKENDS: tuple[str, ...] = tuple(b for b in BACKENDS if b != "torch")


def parse_backends(spec: str) -> tuple[str, ...]:
    """'torch' -> (), 'all' -> every other backend, 'a,b' -> (a, b) (torch, always measured, dropped)."""
    if spec == "all":
        return OTHER_BACKENDS
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"--backend {spec!r}: choose from {', '.join(BACKENDS)}, a comma-separated list, or all")
    return tuple(n for n in names if n != "torch")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, iters: int) -> dict[str, float]:
    """Median ms of each function, calling them in turn within every iteration."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _build(name: str, detector: Detector, onnx_dir: Path) -> InferenceBackend:
    from simdistill_ros.core.backends.torch_backend import TorchBackend

    if name in ("compiled", "cudagraph"):
        return TorchBackend(copy.deepcopy(detector.model), detector.device, detector.precision, mode=name)
    from simdistill_ros.core.backends.base import require_module

    if name == "tensorrt" and detector.device.type != "cuda":  # before the (slow) export
        raise BackendUnavailableError("backend 'tensorrt' needs a CUDA device")
    require_module("tensorrt" if name == "tensorrt" else "onnxruntime", name)
    onnx_path = onnx_dir / "student.onnx"
    if not onnx_path.exists():
        require_module("onnxscript", name)
        from training.export import export_onnx

        export_onnx(copy.deepcopy(detector.model), detector.config, onnx_path, "0" * 64, verify=False)
    if name == "onnxruntime":
        from simdistill_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, detector.device, detector.precision)
    from simdistill_ros.core.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(onnx_path, detector.device, detector.precision, cache_dir=onnx_dir / "engines")


def compare_backends(detector: Detector, frame: Frame, names: tuple[str, ...], warmup: int,
                     iters: int) -> dict[str, dict[str, Any]]:
    """One entry per backend: timings (ms), ratios to eager torch, memory, agreement; or 'skipped'."""
    dev = detector.device
    aug = detector.image_augs(frame)
    out: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        images, plan = detector.preprocess(frame, aug), detector.plan_for(frame, aug)
        ref = detector.backend(images, plan)
    with tempfile.TemporaryDirectory(prefix="simdistill-bench-") as tmp:
        for name in names:
            t0 = time.perf_counter()
            try:
                backend = _build(name, detector, Path(tmp))
            except BackendUnavailableError as e:
                out[name] = {"skipped": str(e)}
                continue
            setup_s = time.perf_counter() - t0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            with torch.inference_mode():
                heads = backend(images, plan)
            _sync(dev)
            first_s = time.perf_counter() - t0
            other = Detector(backend, detector.config, score_threshold=detector.postprocess.score_threshold,
                             max_detections=detector.postprocess.max_detections)
            with torch.inference_mode():
                net = interleaved({"torch": lambda: detector.backend(images, plan),
                                   name: lambda: backend(images, plan)}, dev, warmup, iters)
            e2e = interleaved({"torch": lambda: detector.detect(frame), name: lambda: other.detect(frame)},
                              dev, warmup, iters)
            entry: dict[str, Any] = {
                "backend": backend.describe(), "setup_s": setup_s, "first_call_s": first_s,
                "network_ms": net[name], "torch_network_ms": net["torch"],
                "network_speedup_vs_torch": net["torch"] / net[name],
                "end_to_end_ms": e2e[name], "torch_end_to_end_ms": e2e["torch"],
                "end_to_end_speedup_vs_torch": e2e["torch"] / e2e[name],
                "max_abs_diff_vs_torch": max(float((a.float() - b.float()).abs().max()) for a, b in zip(heads, ref)),
                "process_peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            if dev.type == "cuda":
                entry["peak_allocated_MiB"] = torch.cuda.max_memory_allocated(dev) / 2**20
            out[name] = entry
            del backend, other, heads
            gc.collect()
    return out


def print_backends(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'backend':<13}{'network ms':>11}{'torch ms':>10}{'speedup':>9}{'e2e ms':>9}{'torch e2e':>10}"
          f"{'speedup':>9}{'max|diff|':>11}{'setup s':>9}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<13}skipped: {r['skipped']}")
            continue
        print(f"{name:<13}{r['network_ms']:>11.2f}{r['torch_network_ms']:>10.2f}{r['network_speedup_vs_torch']:>9.2f}"
              f"{r['end_to_end_ms']:>9.2f}{r['torch_end_to_end_ms']:>10.2f}{r['end_to_end_speedup_vs_torch']:>9.2f}"
              f"{r['max_abs_diff_vs_torch']:>11.2e}{r['setup_s']:>9.1f}")
