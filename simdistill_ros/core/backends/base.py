"""The interface every inference backend implements, and the lazy import of optional runtimes.

A backend runs the student network only: normalised images and a view-transform plan in, raw head
tensors out. Pre-processing, the plan and decoding are the Detector's and are the same for every
backend. Optional runtimes (onnxruntime, tensorrt) are imported when a backend that needs them is
built, never at module import; a missing one is a `BackendUnavailableError` with the exact install
command.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from types import ModuleType

import torch
from torch import Tensor

from simdistill_ros.core.view_plan import BEVPoolPlan

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}

INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install 'simdistill_ros[export]'   (CPU; for CUDA: pip install onnxruntime-gpu)",
    "onnx": "pip install 'simdistill_ros[export]'",
    "onnxscript": "pip install 'simdistill_ros[export]'",
    "tensorrt": "pip install tensorrt-cu12   (desktop CUDA 12; on Jetson use JetPack's python3-libnvinfer)",
}


class BackendUnavailableError(ValueError):
    """A backend cannot run here (runtime not installed, no CUDA device, unsupported precision)."""


def require_module(module: str, backend: str) -> ModuleType:
    """Import an optional runtime for `backend`, or raise BackendUnavailableError with its install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        raise BackendUnavailableError(f"backend {backend!r} needs the Python module {module!r}, which is not "
                                      f"installed ({e}); install it with: {hint}") from e


def check_precision(precision: str, device: torch.device, backend: str,
                    allowed: tuple[str, ...] = PRECISIONS) -> None:
    """ValueError for an unknown precision, one the backend lacks, or fp16 without CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in allowed:
        raise BackendUnavailableError(f"backend {backend!r} supports precision {', '.join(allowed)}, not {precision}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (use bf16 on CPU)")


class InferenceBackend(ABC):
    """Runs the student network: `backend(images, plan)` -> raw heads.

    images: 1 x N x 3 x H x W normalised float32 on `device`; plan: the frame's BEVPoolPlan on `device`.
    Returns one 1 x (10 + n_cls_t) x Hh x Wh float32 tensor per task, on `device`.
    """

    name: str
    device: torch.device
    precision: str

    @abstractmethod
    def __call__(self, images_bn3hw: Tensor, plan: BEVPoolPlan) -> tuple[Tensor, ...]:
        ...

    def describe(self) -> str:
        """One line naming the backend, device and precision (for logs and benchmarks)."""
        return f"{self.name} on {self.device} ({self.precision})"
