"""`simdistill export`: a student checkpoint -> one self-contained ONNX file, or a TensorRT engine.

The ONNX graph is the whole student (`Student.forward`, scatter_add pooling), traced by the default
dynamo exporter of `torch.onnx.export`. The view-transform plan's three index tensors are graph inputs
with one shared dynamic length `num_points`, so one file (and one engine) serves any rig: a
calibration change needs a new plan, never a new export. The file embeds its ExportRecord (config,
class names, opset, checkpoint SHA-256: core/backends/metadata.py), which every loader checks.
Each export is verified: onnxruntime must reproduce the PyTorch heads on random inputs, and every
operator is checked against TensorRT's ONNX support (training/tensorrt_audit.py).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from simdistill_ros.core.backends.metadata import (INPUT_NAMES, POINTS_DIM, ExportRecord, output_names,
                                                   sha256_file)
from simdistill_ros.core.checkpoint import load_checkpoint, load_state_into
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.student import Student
from training.fsutil import check_absent, write_bytes_atomic
from training.tensorrt_audit import UNKNOWN, UNSUPPORTED, OpFinding, audit_tensorrt_ops, format_audit

DEFAULT_OPSET = 18
VERIFY_ATOL = 1e-3


def example_inputs(config: DetectorConfig, num_points: int = 4096, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random normalised images and random valid plan indices (batch 1) for tracing and verification."""
    g = torch.Generator().manual_seed(seed)
    n, (h, w) = config.model.num_cameras, config.geometry.image_size
    fh, fw = config.geometry.feature_size
    ny, nx = config.geometry.bev_size
    images = torch.randn(1, n, 3, h, w, generator=g)
    depth = torch.randint(0, n * config.geometry.num_depth_bins * fh * fw, (num_points,), generator=g)
    pixel = torch.randint(0, n * fh * fw, (num_points,), generator=g)
    cell = torch.sort(torch.randint(0, ny * nx, (num_points,), generator=g)).values
    return images, depth, pixel, cell


def export_onnx(model: Student, config: DetectorConfig, out: str | os.PathLike[str], checkpoint_sha256: str,
                opset: int = DEFAULT_OPSET, force: bool = False, verify: bool = True) -> list[OpFinding]:
    """Write `model` as one ONNX file at `out` (atomically; an existing file only with force).
    Returns the TensorRT operator audit. ValueError if onnxruntime disagrees with PyTorch."""
    import onnx

    out = Path(out)
    check_absent(out, force, "ONNX file")
    model = model.cpu().eval()
    args = example_inputs(config)
    points = torch.export.Dim(POINTS_DIM, min=1)
    dynamic = {"images_bn3hw": None, "depth_index": {0: points}, "pixel_index": {0: points},
               "cell_index": {0: points}}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(model, args, str(raw), input_names=list(INPUT_NAMES),
                          output_names=list(output_names(config)), dynamic_shapes=dynamic, opset_version=opset,
                          external_data=False, verbose=False)
        proto = onnx.load(str(raw))
    record = ExportRecord(config, checkpoint_sha256, opset)
    onnx.helper.set_model_props(proto, record.to_props())
    onnx.checker.check_model(proto)
    findings = audit_tensorrt_ops(proto)
    data = proto.SerializeToString()
    if verify:
        _verify(model, data, config)
    write_bytes_atomic(data, out, force=force)
    return findings


def _verify(model: Student, data: bytes, config: DetectorConfig) -> None:
    """onnxruntime on fresh inputs (another point count than traced) must match PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    args = example_inputs(config, num_points=3000, seed=1)
    with torch.inference_mode():
        ref = model(*args)
    got = session.run(None, dict(zip(INPUT_NAMES, (a.numpy() for a in args))))
    for name, r, o in zip(output_names(config), ref, got):
        err = float(np.abs(r.numpy() - o).max())
        if not err <= VERIFY_ATOL:
            raise ValueError(f"export verification failed: onnxruntime's {name} differs from PyTorch by {err:.3g}")


def load_student(checkpoint: str | os.PathLike[str]) -> tuple[Student, DetectorConfig, str]:
    """The checkpoint's Student (CPU, eval), its config and the checkpoint's SHA-256."""
    config, state, _ = load_checkpoint(checkpoint)
    model = Student(config.model, config.geometry)
    load_state_into(model, state, f"checkpoint {checkpoint}")
    return model.eval(), config, sha256_file(checkpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint (.pt)")
    parser.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    parser.add_argument("--out", type=Path, required=True,
                        help="output .onnx, or .engine for tensorrt (its ONNX is written beside it)")
    parser.add_argument("--fp16", action="store_true", help="tensorrt: build an fp16 engine")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="tensorrt engine precision")
    parser.add_argument("--max-points", type=int, help="tensorrt: largest plan (default: all frustum points)")
    parser.add_argument("--device", default="cuda", help="tensorrt: the GPU to build for (default cuda)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")


def main(args: argparse.Namespace) -> int:
    from simdistill_ros.core.backends.base import require_module

    require_module("onnx", "export")
    require_module("onnxscript", "export")
    model, config, digest = load_student(args.checkpoint)
    onnx_path = args.out if args.format == "onnx" else args.out.with_suffix(".onnx")
    if args.format == "tensorrt":  # fail before the (slow) export when no engine can be built here
        check_absent(args.out, args.force, "engine")
        require_trt()
        if not str(args.device).startswith("cuda") or not torch.cuda.is_available():
            raise ValueError(f"--format tensorrt builds on a CUDA GPU; --device {args.device} is not available")
    findings = export_onnx(model, config, onnx_path, digest, args.opset, args.force, verify=not args.no_verify)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, "
          f"{len(config.model.camera_names)} cameras, {POINTS_DIM} dynamic)")
    print(format_audit(findings))
    bad = [f.op for f in findings if f.status in (UNSUPPORTED, UNKNOWN)]
    if bad:
        print(f"warning: TensorRT may not build this graph: {', '.join(bad)}")
    if args.format == "tensorrt":
        _build_engine(args, onnx_path)
    return 0


def _build_engine(args: argparse.Namespace, onnx_path: Path) -> None:
    """NEVER RUN here (no TensorRT/GPU on this project's machines): build and write the engine."""
    from simdistill_ros.core.backends.metadata import write_sidecar
    from simdistill_ros.core.backends.tensorrt_backend import (PointProfile, build_engine, engine_facts,
                                                               gpu_name, read_onnx_record)

    trt = require_trt()
    precision = args.precision or ("fp16" if args.fp16 else "fp32")
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError(f"--format tensorrt builds on a CUDA GPU, got --device {args.device}")
    record = read_onnx_record(onnx_path)
    profile = PointProfile.for_config(record.config, args.max_points)
    with torch.cuda.device(device):
        data = build_engine(onnx_path, precision, profile, timing_cache=args.out.with_suffix(".timing.cache"))
    write_bytes_atomic(data, args.out, force=args.force)
    write_sidecar(record, f"{args.out}.json",
                  engine_facts(sha256_file(onnx_path), gpu_name(device), trt.__version__, precision, profile))
    print(f"wrote {args.out} ({precision}, points {profile.min}..{profile.max}) and {args.out}.json")


def require_trt() -> object:
    from simdistill_ros.core.backends.base import require_module

    return require_module("tensorrt", "tensorrt")
