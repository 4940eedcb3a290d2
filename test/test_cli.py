"""The `simdistill` command: dispatch and bench run end to end on tiny inputs (the demo: test_demo.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from simdistill_ros.cli import main
from simdistill_ros.core.config import DetectorConfig, save_detector_config


def test_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "bench" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_bench_writes_json_with_every_stage(small_config: DetectorConfig, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    preset = tmp_path / "small.yaml"
    save_detector_config(small_config, preset)
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", str(preset), "--warmup", "0", "--iters", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["stages_ms"]) == {"preprocess", "plan_build", "image_encoder", "view_transforms", "gcm", "fuser",
                                        "bev_decoder", "head", "postprocess", "network"}
    assert all(v > 0 for v in result["stages_ms"].values()) and result["end_to_end_ms"] > 0
    assert result["bev_pool"]["max_abs_diff_vs_naive"] < 1e-4
    assert 0 < result["bev_pool"]["points"] <= result["bev_pool"]["volume_points"]
    assert "end to end" in capsys.readouterr().out


def test_bench_refuses_fp16_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--preset", "tiny", "--fp16"]) == 2
    assert "--fp16 needs --device cuda" in capsys.readouterr().err
    assert main(["bench", "--preset", "tiny", "--backend", "torch,jax"]) == 2
    assert "--backend 'torch,jax': choose from torch, compiled" in capsys.readouterr().err


def test_bench_backends_skip_what_cannot_run_here(small_config: DetectorConfig, tmp_path: Path) -> None:
    from simdistill_ros.bench_backends import OTHER_BACKENDS, compare_backends, parse_backends
    from simdistill_ros.core.detector import Detector
    from simdistill_ros.core.model.student import Student
    from simdistill_ros.core.rig import random_frame

    assert parse_backends("all") == OTHER_BACKENDS and parse_backends("torch") == ()
    assert parse_backends("torch,cudagraph") == ("cudagraph",)
    det = Detector(Student(small_config.model, small_config.geometry), small_config)
    out = compare_backends(det, random_frame(small_config.model.camera_names, image_size=(225, 400)),
                           ("cudagraph", "tensorrt"), warmup=0, iters=1)
    assert "needs a CUDA device" in out["cudagraph"]["skipped"] and "needs a CUDA device" in out["tensorrt"]["skipped"]
