"""Backends without an exported file: the bucket-padded plan, the torch modes and precisions, backend
choice and install hints, the TensorRT engine cache key and sidecar checks; CUDA-only checks skip."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from simdistill_ros.core.backends.base import BackendUnavailableError, require_module
from simdistill_ros.core.backends.factory import resolve_backend
from simdistill_ros.core.backends.metadata import ExportRecord
from simdistill_ros.core.backends.tensorrt_backend import (PointProfile, TensorRTBackend, check_engine_facts,
                                                           engine_cache_key, engine_facts)
from simdistill_ros.core.backends.torch_backend import TorchBackend, pad_plan, padded_forward, padded_length
from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.preprocess import preprocess_images
from simdistill_ros.core.types import Frame

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")


def _inputs(det: Detector, frame: Frame) -> tuple[torch.Tensor, object]:
    aug = det.image_augs(frame)
    return det.preprocess(frame, aug), det.plan_for(frame, aug)


def test_padded_plan_gives_the_unpadded_heads(make_student: Callable[..., Student],
                                              small_config: DetectorConfig, random_frame: Frame) -> None:
    model = make_student(small_config)
    det = Detector(model, small_config)
    images, plan = _inputs(det, random_frame)
    assert padded_length(0, 512) == 512 and padded_length(512, 512) == 512 and padded_length(513, 512) == 1024
    length = padded_length(plan.num_points, 4096)
    assert length > plan.num_points, "the test needs real padding"
    with torch.inference_mode():
        ref = model(images, plan.depth_index, plan.pixel_index, plan.cell_index)
        got = padded_forward(model, images, *pad_plan(plan, length))
        calibs = random_frame.calibrations
        plan_b = det.plans.get(np.stack([c.K for c in calibs]), np.stack([c.cam_to_ego for c in calibs]),
                               det.image_augs(random_frame), np.array([True, False, True, True, True, True]))
        other = padded_forward(model, images, *pad_plan(plan_b, length))
        other_ref = model(images, plan_b.depth_index, plan_b.pixel_index, plan_b.cell_index)
    for r, g, o, o_ref in zip(ref, got, other, other_ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-5)
    assert max(float((o - r).abs().max()) for o, r in zip(other, ref)) > 0.1, "another plan, other heads"
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_plan(plan, plan.num_points - 1)


def test_torch_backend_modes_and_precisions(make_student: Callable[..., Student],
                                            small_config: DetectorConfig, random_frame: Frame) -> None:
    model = make_student(small_config)
    det = Detector(model, small_config)
    images, plan = _inputs(det, random_frame)
    ref = det.backend(images, plan)
    cl = TorchBackend(make_student(small_config), channels_last=True)(images, plan)
    bf16 = TorchBackend(make_student(small_config), precision="bf16")(images, plan)
    for r, c, b in zip(ref, cl, bf16):
        assert c.dtype == b.dtype == torch.float32
        torch.testing.assert_close(c, r, rtol=1e-4, atol=1e-4)
        scale = float(r.abs().max())
        assert float((b - r).abs().max()) < 0.1 * scale and float((b - r).abs().mean()) < 0.02 * scale
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TorchBackend(model, precision="fp16")
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        TorchBackend(model, mode="cudagraph")
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(model, precision="int8")


def test_backend_choice_for_each_kind_of_file(make_student: Callable[..., Student],
                                              small_config: DetectorConfig, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", "m.pt", cpu) == "torch"
    assert resolve_backend("auto", "m.onnx", cpu) == "onnxruntime"
    assert resolve_backend("compiled", "m.pt", cpu) == "compiled"
    with pytest.raises(ValueError, match="export it first with `simdistill export --checkpoint m.pt"):
        resolve_backend("onnxruntime", "m.pt", cpu)
    with pytest.raises(ValueError, match="cannot run the onnx file"):
        resolve_backend("torch", "m.onnx", cpu)
    with pytest.raises(BackendUnavailableError, match="nothing can run the engine file m.engine on cpu"):
        resolve_backend("auto", "m.engine", cpu)
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        resolve_backend("jax", "m.pt", cpu)
    path = save_checkpoint(tmp_path / "m.pt", make_student(small_config).state_dict(), small_config)
    det = Detector.from_checkpoint(path, device="cpu", precision="fp32", backend="auto", score_threshold=0.2,
                                   max_detections=7)
    assert det.backend.name == "torch" and det.postprocess.score_threshold == 0.2
    assert det.postprocess.max_detections == 7


@pytest.mark.parametrize("module,hint", [("onnxruntime", "pip install 'simdistill_ros[export]'"),
                                         ("tensorrt", "pip install tensorrt-cu12")])
def test_missing_backend_gives_the_install_hint(module: str, hint: str, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    escaped = hint.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(BackendUnavailableError, match="install it with: " + escaped):
        require_module(module, module)
    if module == "onnxruntime":
        (tmp_path / "m.onnx").write_bytes(b"")
        with pytest.raises(BackendUnavailableError, match="needs the Python module 'onnxruntime'"):
            Detector.from_checkpoint(tmp_path / "m.onnx", backend="onnxruntime")
    else:
        with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
            TensorRTBackend(tmp_path / "m.engine", device="cpu")


def test_engine_cache_key_changes_with_each_part() -> None:
    base = dict(onnx_sha256="a" * 64, gpu_name="NVIDIA H200 (sm_90)", trt_version="10.13.0", precision="fp16",
                profile=PointProfile(1, 1000, 2000))
    variants = [dict(onnx_sha256="b" * 64), dict(gpu_name="Orin (sm_87)"), dict(trt_version="10.3.0"),
                dict(precision="fp32"), dict(profile=PointProfile(1, 1000, 4000)),
                dict(profile=PointProfile(1, 900, 2000))]
    key = engine_cache_key(**base)  # type: ignore[arg-type]
    assert key == engine_cache_key(**base)  # type: ignore[arg-type]
    keys = {engine_cache_key(**{**base, **v}) for v in variants}  # type: ignore[arg-type]
    assert len(keys) == len(variants) and key not in keys


def test_point_profile_and_engine_sidecar_checks(small_config: DetectorConfig) -> None:
    fh, fw = small_config.geometry.feature_size
    bound = 6 * small_config.geometry.num_depth_bins * fh * fw
    prof = PointProfile.for_config(small_config)
    assert (prof.min, prof.max) == (1, bound) and prof.min <= prof.opt <= prof.max
    assert PointProfile.for_config(small_config, max_points=100).max == 100
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        PointProfile(5, 3, 10)
    facts = {**ExportRecord(small_config, "c" * 64, 18).to_props(),
             **engine_facts("d" * 64, "GPU A (sm_90)", "10.13.0", "fp16", prof)}
    assert check_engine_facts(facts, "GPU A (sm_90)", "10.13.0", "e") == prof
    with pytest.raises(ValueError, match="built for gpu 'GPU A \\(sm_90\\)', this machine has 'GPU B"):
        check_engine_facts(facts, "GPU B (sm_87)", "10.13.0", "e")
    with pytest.raises(ValueError, match="built for tensorrt '10.13.0'"):
        check_engine_facts(facts, "GPU A (sm_90)", "10.3.0", "e")
    assert json.loads(facts["engine.points"]) == [prof.min, prof.opt, prof.max]


def test_device_path_preprocessing_equals_cpu_path(small_config: DetectorConfig, random_frame: Frame) -> None:
    """The CUDA path resizes in float (no uint8 kernel on CUDA), from tensors, batched over cameras; run
    here on CPU it must equal the CPU path within one grey level, and the batching must change nothing."""
    g = small_config.geometry
    imgs = list(random_frame.images)
    cpu, augs = preprocess_images(imgs, g)
    dev_path, _ = preprocess_images([torch.from_numpy(i) for i in imgs], g, uint8_kernel=False)
    diff = (dev_path - cpu).abs() * torch.tensor([58.395, 57.12, 57.375]).view(1, 1, 3, 1, 1)
    assert float(diff.max()) <= 1.0 + 1e-3, "at most one grey level apart"
    assert 0.0 < float((diff > 0.5).float().mean()) < 0.3
    one_by_one = torch.cat([preprocess_images([im], g, img_aug=[a])[0] for im, a in zip(imgs, augs)], dim=1)
    assert torch.equal(one_by_one, cpu)
    flipped = augs.copy()
    flipped[2] = np.diag([-1.0, 1.0, 1.0, 1.0]) @ flipped[2]
    flipped[2][0, 3] += g.image_size[1] - 1  # OpenCV pixel centres: a W-pixel row flips by u' = (W - 1) - u
    mixed, _ = preprocess_images(imgs, g, img_aug=flipped)
    assert torch.equal(mixed[:, 2], cpu[:, 2].flip(-1))
    assert torch.equal(mixed[:, [0, 1, 3, 4, 5]], cpu[:, [0, 1, 3, 4, 5]])


@needs_cuda
def test_cuda_preprocessing_equals_cpu(make_student: Callable[..., Student],
                                       small_config: DetectorConfig, random_frame: Frame) -> None:
    det = Detector(make_student(small_config), small_config, device="cuda")
    aug = det.image_augs(random_frame)
    dev = det.preprocess(random_frame, aug).cpu()
    ref, _ = preprocess_images(list(random_frame.images), small_config.geometry, uint8_kernel=False)
    torch.testing.assert_close(dev, ref, rtol=0, atol=1e-5)


@needs_cuda
def test_cuda_fp16_boxes_match_fp32(make_student: Callable[..., Student],
                                    small_config: DetectorConfig, random_frame: Frame) -> None:
    post = dataclasses.replace(small_config.postprocess, score_threshold=0.12)
    config = dataclasses.replace(small_config, postprocess=post)
    a = Detector(make_student(config), config, device="cuda").detect(random_frame)
    b = Detector(make_student(config), config, device="cuda", precision="fp16").detect(random_frame)
    assert len(a) > 0
    n = min(len(a), len(b), 20)
    np.testing.assert_allclose(b.scores[:n], a.scores[:n], atol=2e-2)
    np.testing.assert_allclose(b.boxes[:n, :3], a.boxes[:n, :3], atol=0.1)


@needs_cuda
def test_cuda_graphs_match_eager(make_student: Callable[..., Student],
                                 small_config: DetectorConfig, random_frame: Frame) -> None:
    det = Detector(make_student(small_config), small_config, device="cuda")
    images, plan = _inputs(det, random_frame)
    ref = det.backend(images, plan)
    graphed = TorchBackend(make_student(small_config), "cuda", mode="cudagraph", bucket=4096)
    for _ in range(2):  # capture, then replay
        got = graphed(images, plan)
        for r, g in zip(ref, got):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    assert len(graphed._graphs) == 1
