"""The onnxruntime backend: an exported ONNX file run by onnxruntime's CUDA execution provider when the
device is CUDA and the provider is installed (onnxruntime-gpu), else by its CPU provider.

The file's embedded record (backends/metadata.py) is checked against its graph on load; the
DetectorConfig the Detector uses comes from that record. On CUDA the inputs and outputs stay on the
device (I/O binding of torch tensors); on CPU they are passed as numpy views without copies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simdistill_ros.core.backends.base import (BackendUnavailableError, InferenceBackend, check_precision,
                                               require_module)
from simdistill_ros.core.backends.metadata import ExportRecord, check_graph, output_names, output_shapes
from simdistill_ros.core.view_plan import BEVPoolPlan

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def _shape(value_info: Any) -> list[Any]:
    return list(value_info.shape)


class OnnxRuntimeBackend(InferenceBackend):
    """Runs `path` (an ONNX file from `simdistill export`) with onnxruntime.

    device: cpu or cuda[:N] (CUDA needs onnxruntime-gpu); precision: fp32 only (the exported graph is
    fp32; use tensorrt for fp16). threads: intra-op threads (default: onnxruntime's choice).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        self.device = torch.device(device)
        check_precision(precision, self.device, self.name, allowed=("fp32",))
        self.precision = precision
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {self.path} does not exist")
        ort = require_module("onnxruntime", self.name)
        ort.disable_telemetry_events()  # onnxruntime 1.32's 1DS telemetry: nothing leaves a robot
        providers: list[Any] = [CPU_PROVIDER]
        if self.device.type == "cuda":
            if CUDA_PROVIDER not in ort.get_available_providers():
                raise BackendUnavailableError(
                    f"backend 'onnxruntime' on {self.device} needs onnxruntime's {CUDA_PROVIDER}, which this "
                    f"onnxruntime ({ort.__version__}: {', '.join(ort.get_available_providers())}) lacks; "
                    f"install it with: pip uninstall onnxruntime && pip install onnxruntime-gpu")
            providers = [(CUDA_PROVIDER, {"device_id": self.device.index or 0}), CPU_PROVIDER]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        # no busy-waiting of idle worker threads: they would steal the cores of the ROS callbacks (and of
        # torch, when the bench interleaves the two)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"ONNX file {self.path} cannot be loaded by onnxruntime: {type(e).__name__}: {e}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        self.record = ExportRecord.from_props(meta, f"ONNX file {self.path}")
        check_graph(self.record, {i.name: _shape(i) for i in self.session.get_inputs()},
                    {o.name: _shape(o) for o in self.session.get_outputs()}, f"ONNX file {self.path}")
        self.output_names = list(output_names(self.record.config))
        self.providers = self.session.get_providers()

    def _run_cuda(self, feeds: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """Bind torch tensors on the device as inputs and preallocated outputs (no host round trip)."""
        binding = self.session.io_binding()
        dev_id = self.device.index or 0
        for name, t in feeds.items():
            t = feeds[name] = t.contiguous()
            binding.bind_input(name, "cuda", dev_id, np.float32 if t.dtype == torch.float32 else np.int64,
                               list(t.shape), t.data_ptr())
        outputs = tuple(torch.empty(output_shapes(self.record.config)[name], device=self.device)
                        for name in self.output_names)
        for name, t in zip(self.output_names, outputs):
            binding.bind_output(name, "cuda", dev_id, np.float32, list(t.shape), t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch's stream
        self.session.run_with_iobinding(binding)
        return outputs

    def __call__(self, images_bn3hw: Tensor, plan: BEVPoolPlan) -> tuple[Tensor, ...]:
        feeds = {"images": images_bn3hw.float(), "depth_index": plan.depth_index,
                 "pixel_index": plan.pixel_index, "cell_index": plan.cell_index}
        if self.device.type == "cuda":
            return self._run_cuda(feeds)
        arrays = {k: v.detach().contiguous().numpy() for k, v in feeds.items()}
        return tuple(torch.from_numpy(o) for o in self.session.run(self.output_names, arrays))

    def describe(self) -> str:
        return f"onnxruntime on {self.device} ({self.precision}, {self.providers[0]})"
