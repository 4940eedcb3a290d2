"""Inference backends of the student network: torch (eager, compiled, CUDA graphs), onnxruntime and
TensorRT, behind one interface (base.InferenceBackend). Optional runtimes are imported lazily."""
from simdistill_ros.core.backends.base import BackendUnavailableError, InferenceBackend
from simdistill_ros.core.backends.factory import BACKENDS, backend_available, load_backend, resolve_backend

__all__ = ["BACKENDS", "BackendUnavailableError", "InferenceBackend", "backend_available", "load_backend",
           "resolve_backend"]
