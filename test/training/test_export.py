"""`simdistill export` and the onnxruntime backend: the exported tiny student against PyTorch on fresh
random inputs, on a rendered synthetic frame (same boxes) and on two rigs with one file; the r50 export
reloads; mismatched files are refused; every operator passes the TensorRT audit.

One tiny export (through the CLI) serves the module; r50 is exported once, without verification."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from simdistill_ros.cli import main as cli_main
from simdistill_ros.core.backends.metadata import ExportRecord, check_expected
from simdistill_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig, load_preset
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.frames import OPTICAL_TO_BODY, yaw_rotation
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.rig import random_frame
from simdistill_ros.core.types import CameraCalibration, Frame
from training.export import example_inputs, export_onnx
from training.tensorrt_audit import PLUGIN, SUPPORTED, UNKNOWN, UNSUPPORTED, audit_tensorrt_ops

ATOL = 2e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory,
         make_student: Callable[..., Student]) -> tuple[Student, DetectorConfig, Path, Path]:
    """A tiny student with input-sensitive random weights, its checkpoint and its ONNX export."""
    config = load_preset("tiny")
    config = dataclasses.replace(config, postprocess=dataclasses.replace(config.postprocess, score_threshold=0.6))
    model = make_student(config, seed=3)
    d = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(d / "tiny.pt", model.state_dict(), config)
    out = d / "tiny.onnx"
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    return model, config, ckpt, out


def _heads_close(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):  # float32 sums in another order: tolerance relative to the heads' scale (~1-10;
        # a wrong pooling moves them by ~0.1, test/core/test_backends.py)
        torch.testing.assert_close(x, y, rtol=1e-4, atol=ATOL * max(1.0, float(y.abs().max())))


def test_onnxruntime_matches_torch_on_fresh_random_inputs(tiny: tuple[Student, DetectorConfig, Path, Path]) -> None:
    model, config, _, onnx_path = tiny
    backend = OnnxRuntimeBackend(onnx_path)
    assert backend.record.config == config
    for points in (777, 20_000):  # neither is the traced length
        images, d, p, c = example_inputs(config, num_points=points, seed=int(torch.randint(0, 2**31, ())))
        plan = type("Plan", (), {"depth_index": d, "pixel_index": p, "cell_index": c})()
        with torch.inference_mode():
            ref = model(images, d, p, c)
        _heads_close(backend(images, plan), ref)  # type: ignore[arg-type]


def _synthetic_frame(names: tuple[str, ...]) -> Frame:
    """Six cameras rendered from a synthetic world (training/data/synth) at 225 x 400."""
    from training.data.synth import rig
    from training.data.synth.render import render_camera
    from training.data.synth.world import make_world

    size = (225, 400)
    world = make_world(int(np.random.default_rng().integers(0, 1000)), 0, 1.0)
    specs = [next(c for c in rig.CAMERAS if c.channel == n) for n in names]
    images = tuple(render_camera(world, 0.0, s, size).image for s in specs)
    calibs = []
    for s in specs:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rig.camera_to_ego(s), s.translation
        calibs.append(CameraCalibration(s.channel, rig.intrinsics(s, size), T, size))
    return Frame(images, tuple(calibs), stamp_ns=7)


def test_onnxruntime_gives_the_same_boxes_on_a_synthetic_frame(
        tiny: tuple[Student, DetectorConfig, Path, Path]) -> None:
    model, config, _, onnx_path = tiny
    frame = _synthetic_frame(config.model.camera_names)
    ref = Detector(model, config).detect(frame)
    ort = Detector.from_checkpoint(onnx_path, device="cpu", precision="fp32", backend="onnxruntime",
                                   score_threshold=0.6, max_detections=300)
    got = ort.detect(frame)
    assert ort.backend.name == "onnxruntime" and 0 < len(ref) < 300
    assert got.names == ref.names
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
    keep = [0, 1, 2, 6, 7, 8]  # centre, yaw, velocity; sizes are exp(log-size) of random weights: relative
    np.testing.assert_allclose(got.boxes[:, keep], ref.boxes[:, keep], atol=2e-3)
    np.testing.assert_allclose(got.boxes[:, 3:6], ref.boxes[:, 3:6], rtol=2e-2)


def _other_rig(names: tuple[str, ...], size: tuple[int, int] = (360, 640)) -> tuple[CameraCalibration, ...]:
    """A rig unlike the nuScenes one: other image size and focal length, 1.9 m high, yaws 0, 60, ..."""
    h, w = size
    K = np.array([[450.0, 0.0, w / 2 + 13.0], [0.0, 450.0, h / 2 - 21.0], [0.0, 0.0, 1.0]])
    out = []
    for i, name in enumerate(names):
        a = math.radians(60.0 * i + 5.0)
        T = np.eye(4)
        T[:3, :3] = yaw_rotation(a) @ OPTICAL_TO_BODY
        T[:3, 3] = [0.8 * math.cos(a), 0.6 * math.sin(a), 1.9]
        out.append(CameraCalibration(name, K, T, size))
    return tuple(out)


def test_one_onnx_file_serves_two_rigs(tiny: tuple[Student, DetectorConfig, Path, Path]) -> None:
    model, config, _, onnx_path = tiny
    names = config.model.camera_names
    ort, ref = Detector.from_checkpoint(onnx_path, backend="onnxruntime"), Detector(model, config)
    rng = np.random.default_rng()
    frames = [random_frame(names, image_size=(450, 800)),
              Frame(tuple(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in names), _other_rig(names))]
    points = []
    for frame in frames:
        aug = ref.image_augs(frame)
        images, plan = ref.preprocess(frame, aug), ref.plan_for(frame, aug)
        points.append(plan.num_points)
        _heads_close(ort.backend(images, plan), ref.backend(images, plan))
    assert points[0] != points[1], "the two rigs have different plans"


def test_a_mismatched_or_foreign_file_is_refused(tiny: tuple[Student, DetectorConfig, Path, Path],
                                                 tmp_path: Path) -> None:
    model, config, ckpt, onnx_path = tiny
    record = OnnxRuntimeBackend(onnx_path).record
    check_expected(record, "f", config=config, checkpoint=ckpt)
    other_ckpt = save_checkpoint(tmp_path / "other.pt", {k: v + 1 for k, v in model.state_dict().items()}, config)
    with pytest.raises(ValueError, match="exported from a checkpoint with SHA-256 .* not from .*other.pt"):
        check_expected(record, "f", checkpoint=other_ckpt)
    other = dataclasses.replace(config, geometry=dataclasses.replace(config.geometry, depth_step=4.0))
    with pytest.raises(ValueError, match="exported for another config \\(differs in geometry\\)"):
        check_expected(record, "f", config=other)

    proto = onnx.load(str(onnx_path))
    wrong_geometry = dataclasses.replace(config, geometry=dataclasses.replace(config.geometry, image_size=(256, 704),
                                                                              resize_width=768))
    onnx.helper.set_model_props(proto, ExportRecord(wrong_geometry, record.checkpoint_sha256, 18).to_props())
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    with pytest.raises(ValueError, match="graph input 'images' has shape \\[1, 6, 3, 128, 352\\] but the recorded "
                                         "geometry/model \\(tiny\\) needs \\[1, 6, 3, 256, 704\\]"):
        OnnxRuntimeBackend(tmp_path / "edited.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="metadata field 'simdistill.format' is missing"):
        Detector.from_checkpoint(tmp_path / "bare.onnx", backend="auto")
    with pytest.raises(FileExistsError, match="pass --force"):
        export_onnx(model, config, onnx_path, record.checkpoint_sha256)


def test_every_operator_passes_the_tensorrt_audit(tiny: tuple[Student, DetectorConfig, Path, Path]) -> None:
    findings = audit_tensorrt_ops(onnx.load(str(tiny[3])))
    status = {f.op: f.status for f in findings}
    assert status["ScatterElements"] == PLUGIN and status["GridSample"] == SUPPORTED
    assert set(status.values()) <= {SUPPORTED, PLUGIN}, findings
    # the audit can fail: an antialiased Resize, an unsupported op and an op outside the table
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], dtype=np.float32), "scales")
    nodes = [onnx.helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="linear", antialias=1),
             onnx.helper.make_node("Unique", ["r"], ["u"]), onnx.helper.make_node("Hardmax", ["u"], ["y"])]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], [scales])
    bad = {f.op: f.status for f in audit_tensorrt_ops(onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", 18)]))}
    assert bad == {"Resize": UNSUPPORTED, "Unique": UNSUPPORTED, "Hardmax": UNKNOWN}


def test_r50_export_reloads(tmp_path: Path) -> None:
    config = load_preset("r50")
    out = tmp_path / "r50.onnx"
    export_onnx(Student(config.model, config.geometry), config, out, "0" * 64, verify=False)
    backend = OnnxRuntimeBackend(out)
    assert backend.record.config == config and backend.record.opset == 18
    assert [i.name for i in backend.session.get_inputs()] == ["images", "depth_index", "pixel_index", "cell_index"]


def test_tensorrt_export_without_tensorrt_names_the_install(tiny: tuple[Student, DetectorConfig, Path, Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "m.engine"
    assert cli_main(["export", "--checkpoint", str(tiny[2]), "--format", "tensorrt", "--out", str(out)]) == 2
    assert "pip install tensorrt-cu12" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".onnx").exists()
