"""TensorRT: build an engine from an exported ONNX file (fp32/fp16/bf16, a timing cache, one
optimisation profile over the point count), cache it, and run it on CUDA tensors.

NEVER RUN: no machine of this project has TensorRT and a CUDA GPU (environment.md). This module is
written against the TensorRT 10 Python API documentation (Builder, OnnxParser, IBuilderConfig,
IOptimizationProfile, ITimingCache, Runtime, IExecutionContext.execute_async_v3); only what needs no
GPU is tested (the cache key, the profile bounds, the sidecar checks, the missing-module error).

Engines are specific to a GPU model and a TensorRT version, so they are built on the machine that
runs them (the Jetson itself) and cached under a key made of the ONNX file's SHA-256, the GPU name,
the TensorRT version, the precision and the profile. The BEV pooling's ScatterElements(reduction=add)
is imported by onnx-tensorrt as the ScatterElements plugin of libnvinfer_plugin, so the plugin
library is initialised before parsing (see docs/benchmarks.md, "ONNX operators and TensorRT").
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from simdistill_ros.core.backends.base import (BackendUnavailableError, InferenceBackend, check_precision,
                                               require_module)
from simdistill_ros.core.backends.metadata import (INPUT_NAMES, ExportRecord, check_graph, output_names,
                                                   output_shapes, read_sidecar, sha256_file, write_sidecar)
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.view_plan import BEVPoolPlan

INDEX_INPUTS: tuple[str, ...] = INPUT_NAMES[1:]
DEFAULT_WORKSPACE = 4 << 30
ENGINE_SUFFIXES: tuple[str, ...] = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class PointProfile:
    """The optimisation profile of the index inputs' length P: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"point profile needs 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    @classmethod
    def for_config(cls, config: DetectorConfig, max_points: int | None = None,
                   opt_fraction: float = 0.85) -> "PointProfile":
        """max: every frustum point valid (N x D x fH x fW, the hard upper bound) unless given; opt: the
        share of valid points of a nuScenes-like rig (0.84 for r50: docs/benchmarks.md)."""
        fh, fw = config.geometry.feature_size
        bound = config.model.num_cameras * config.geometry.num_depth_bins * fh * fw
        top = bound if max_points is None else int(max_points)
        return cls(1, max(1, min(top, int(round(opt_fraction * top)))), top)


def engine_cache_key(onnx_sha256: str, gpu_name: str, trt_version: str, precision: str,
                     profile: PointProfile) -> str:
    """Hex key of an engine: it changes when any of its inputs does."""
    facts = {"onnx_sha256": onnx_sha256, "gpu": gpu_name, "tensorrt": trt_version, "precision": precision,
             "points": [profile.min, profile.opt, profile.max]}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def gpu_name(device: torch.device) -> str:
    """GPU model and compute capability, e.g. 'NVIDIA H200 (sm_90)'."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"


def _write_atomic(data: bytes, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _logger(trt: Any) -> Any:
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def read_onnx_record(onnx_path: Path) -> ExportRecord:
    """The embedded record of an exported ONNX file, read with the onnx package (weights not loaded)."""
    onnx = require_module("onnx", "tensorrt")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return ExportRecord.from_props({p.key: p.value for p in model.metadata_props}, f"ONNX file {onnx_path}")


def build_engine(onnx_path: str | os.PathLike[str], precision: str, profile: PointProfile,
                 timing_cache: str | os.PathLike[str] | None = None, workspace_bytes: int = DEFAULT_WORKSPACE) -> bytes:
    """Serialised engine of the ONNX file. The timing cache file is read when present and rewritten
    with what this build measured, so later builds (other precisions, profiles) skip the tactic timing."""
    trt = require_module("tensorrt", "tensorrt")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    opt_profile = builder.create_optimization_profile()
    for name in INDEX_INPUTS:
        opt_profile.set_shape(name, (profile.min,), (profile.opt,), (profile.max,))
    config.add_optimization_profile(opt_profile)
    cache_path = None if timing_cache is None else Path(timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(bytes(memoryview(config.get_timing_cache().serialize())), cache_path)
    return bytes(memoryview(serialized))


class EngineCache:
    """Engines under `root`, one `<key>.engine` + `<key>.engine.json` sidecar per engine_cache_key,
    with one shared timing cache (`timing.cache`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def get_or_build(self, onnx_path: str | os.PathLike[str], device: torch.device, precision: str,
                     profile: PointProfile) -> Path:
        """The cached engine for these inputs, built (and written atomically) when absent."""
        trt = require_module("tensorrt", "tensorrt")
        onnx_path = Path(onnx_path)
        record = read_onnx_record(onnx_path)
        digest, gpu = sha256_file(onnx_path), gpu_name(device)
        path = self.engine_path(engine_cache_key(digest, gpu, trt.__version__, precision, profile))
        if path.is_file() and Path(f"{path}.json").is_file():
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        with torch.cuda.device(device):
            data = build_engine(onnx_path, precision, profile, self.root / "timing.cache")
        _write_atomic(data, path)
        write_sidecar(record, f"{path}.json", engine_facts(digest, gpu, trt.__version__, precision, profile))
        return path


def engine_facts(onnx_sha256: str, gpu: str, trt_version: str, precision: str, profile: PointProfile) -> dict[str, str]:
    """What an engine's sidecar records besides the export record."""
    return {"engine.onnx_sha256": onnx_sha256, "engine.gpu": gpu, "engine.tensorrt": trt_version,
            "engine.precision": precision, "engine.points": json.dumps([profile.min, profile.opt, profile.max])}


def check_engine_facts(facts: dict[str, str], gpu: str, trt_version: str, source: str) -> PointProfile:
    """Refuse an engine built on another GPU model or TensorRT version; returns its point profile."""
    for key, here in (("engine.gpu", gpu), ("engine.tensorrt", trt_version)):
        if key not in facts:
            raise ValueError(f"{source}: sidecar lacks {key!r}")
        if facts[key] != here:
            raise ValueError(f"{source} was built for {key.split('.')[1]} {facts[key]!r}, this machine has {here!r}: "
                             f"engines are not portable, rebuild it from the ONNX file")
    return PointProfile(*json.loads(facts["engine.points"]))


class TensorRTBackend(InferenceBackend):
    """Runs a TensorRT engine on CUDA. `path`: an engine (with its .json sidecar) or an exported ONNX
    file, whose engine is built into / loaded from `cache_dir` (default: beside the ONNX file)."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cuda", precision: str = "fp16",
                 cache_dir: str | os.PathLike[str] | None = None, max_points: int | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailableError(f"backend 'tensorrt' needs a CUDA device, got {device!r}"
                                          + ("" if torch.cuda.is_available() else " (CUDA is not available)"))
        check_precision(precision, self.device, self.name)
        trt = require_module("tensorrt", self.name)
        self.precision = precision
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        if path.suffix == ".onnx":
            record = read_onnx_record(path)
            cache = EngineCache(cache_dir if cache_dir is not None else path.parent / f"{path.stem}.engines")
            path = cache.get_or_build(path, self.device, precision, PointProfile.for_config(record.config, max_points))
        facts = read_sidecar(f"{path}.json")
        self.record = ExportRecord.from_props(facts, f"engine {path}")
        self.profile = check_engine_facts(facts, gpu_name(self.device), trt.__version__, f"engine {path}")
        self.engine_path = path
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ValueError(f"engine {path} cannot be deserialised by TensorRT {trt.__version__}")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = {n: list(self.engine.get_tensor_shape(n)) for n in names
                  if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        check_graph(self.record, inputs, {n: list(self.engine.get_tensor_shape(n)) for n in names if n not in inputs},
                    f"engine {path}")
        self.output_names = list(output_names(self.record.config))

    def __call__(self, images_bn3hw: Tensor, plan: BEVPoolPlan) -> tuple[Tensor, ...]:
        if not self.profile.min <= plan.num_points <= self.profile.max:
            raise ValueError(f"the plan has {plan.num_points} points, outside the engine's profile "
                             f"[{self.profile.min}, {self.profile.max}]: rebuild it with a larger --max-points")
        feeds = {"images": images_bn3hw.float().contiguous(), "depth_index": plan.depth_index.contiguous(),
                 "pixel_index": plan.pixel_index.contiguous(), "cell_index": plan.cell_index.contiguous()}
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        shapes = output_shapes(self.record.config)
        outputs = tuple(torch.empty(shapes[n], device=self.device) for n in self.output_names)
        for name, t in zip(self.output_names, outputs):
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.engine_path} failed")
        return outputs
