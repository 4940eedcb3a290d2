"""Choosing and building a backend for a model file: a checkpoint (torch, compiled, cudagraph), an
exported ONNX file (onnxruntime, tensorrt) or a TensorRT engine (tensorrt).

`auto` takes the first backend of AUTO_ORDER that can run the file on the device with what is
installed. The order is by expected speed (TensorRT before onnxruntime; CUDA graphs before eager on a
GPU); it never converts a file (a checkpoint is not exported behind the user's back).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from simdistill_ros.core.backends.base import INSTALL_HINTS, BackendUnavailableError, InferenceBackend
from simdistill_ros.core.backends.tensorrt_backend import ENGINE_SUFFIXES
from simdistill_ros.core.config import DetectorConfig

BACKENDS: tuple[str, ...] = ("torch", "compiled", "cudagraph", "onnxruntime", "tensorrt")
RUNS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("torch", "compiled", "cudagraph"),
    "onnx": ("onnxruntime", "tensorrt"),
    "engine": ("tensorrt",),
}
AUTO_ORDER: dict[tuple[str, str], tuple[str, ...]] = {
    ("checkpoint", "cuda"): ("cudagraph", "torch"),
    ("checkpoint", "cpu"): ("torch",),
    ("onnx", "cuda"): ("tensorrt", "onnxruntime"),
    ("onnx", "cpu"): ("onnxruntime",),
    ("engine", "cuda"): ("tensorrt",),
    ("engine", "cpu"): (),
}


def model_kind(path: str | os.PathLike[str]) -> str:
    """'onnx', 'engine' or 'checkpoint', from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    return "engine" if suffix in ENGINE_SUFFIXES else "checkpoint"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def backend_available(name: str, device: torch.device) -> bool:
    """Whether `name` can run on `device` with what is installed (cheap: imports nothing heavy)."""
    if name in ("cudagraph", "tensorrt") and device.type != "cuda":
        return False
    if device.type == "cuda" and not torch.cuda.is_available():
        return False
    if name == "tensorrt":
        return _installed("tensorrt")
    if name == "onnxruntime":
        if not _installed("onnxruntime"):
            return False
        if device.type == "cuda":
            import onnxruntime

            return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return True


def resolve_backend(name: str, path: str | os.PathLike[str], device: torch.device) -> str:
    """The concrete backend for `name` (auto or one of BACKENDS) and this file; ValueError when the
    backend cannot run this kind of file, BackendUnavailableError when auto finds none."""
    kind = model_kind(path)
    if name == "auto":
        for candidate in AUTO_ORDER[(kind, device.type)]:
            if backend_available(candidate, device):
                return candidate
        wanted = AUTO_ORDER[(kind, device.type)] or RUNS[kind]
        hints = "; ".join(f"{w}: {INSTALL_HINTS.get(w, 'needs a CUDA device')}" for w in wanted)
        raise BackendUnavailableError(f"backend 'auto': nothing can run the {kind} file {path} on {device}; "
                                      f"it needs one of {', '.join(wanted)} ({hints})")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)} or auto")
    if name not in RUNS[kind]:
        if kind == "checkpoint":
            raise ValueError(f"backend {name!r} runs an exported file, and {path} is a checkpoint: export it first "
                             f"with `simdistill export --checkpoint {path} --format onnx --out model.onnx`")
        raise ValueError(f"backend {name!r} cannot run the {kind} file {path}; it runs "
                         f"{', '.join(k for k, v in RUNS.items() if name in v)} files "
                         f"({kind} files run with {', '.join(RUNS[kind])})")
    return name


def load_backend(path: str | os.PathLike[str], backend: str = "torch", device: str | torch.device = "cpu",
                 precision: str = "fp32") -> tuple[InferenceBackend, DetectorConfig]:
    """Build the backend for a model file; returns it with the DetectorConfig the file carries."""
    device = torch.device(device)
    name = resolve_backend(backend, path, device)
    if name in RUNS["checkpoint"]:
        from simdistill_ros.core.backends.torch_backend import TorchBackend
        from simdistill_ros.core.checkpoint import load_checkpoint, load_state_into
        from simdistill_ros.core.model.student import Student

        config, state, _ = load_checkpoint(path)
        model = Student(config.model, config.geometry)
        load_state_into(model, state, f"checkpoint {path}")
        return TorchBackend(model, device, precision, mode=name), config
    if name == "onnxruntime":
        from simdistill_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend

        ort_backend = OnnxRuntimeBackend(path, device, precision)
        return ort_backend, ort_backend.record.config
    from simdistill_ros.core.backends.tensorrt_backend import TensorRTBackend

    trt_backend = TensorRTBackend(path, device, precision)
    return trt_backend, trt_backend.record.config
