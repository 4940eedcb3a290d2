"""`simdistill demo` end to end on a reduced world (2 key frames per scene, 90x160 cameras) with a random-weight
checkpoint of the shrunk tiny preset: generation once into the cache, the bag, the replay with devkit metrics,
pictures and report.json, the ROS 2 path through a real detector_node, refusal of a non-empty --out, and
the error for a missing bundled checkpoint."""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from simdistill_ros.cli import main
from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig

pytestmark = pytest.mark.timeout(300)
SMALL = ["--world-samples", "2", "--world-image-size", "90", "160", "--threads", "1", "--pictures", "1"]


@pytest.fixture(scope="module")
def checkpoint(small_config: DetectorConfig, make_student, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    return save_checkpoint(tmp_path_factory.mktemp("demo_ckpt") / "student.pt",
                           make_student(small_config).state_dict(), small_config)


def test_demo_with_and_without_ros(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", os.environ.get("ROS_DOMAIN_ID", "0"))  # restored afterwards
    cache, out = tmp_path / "cache", tmp_path / "demo"
    args = ["demo", "--out", str(out), "--checkpoint", str(checkpoint), "--work", str(cache), *SMALL]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "generating the demo world" in text and "mAP" in text and "p99" in text
    assert "ros2 bag play" in text and "ros2 launch simdistill_ros detector.launch.py" in text and "rviz2 -d" in text
    (world,) = cache.iterdir()
    assert world.name == "demo-world-seed2026-90x160-sweeps3-2x2"
    report = json.loads((out / "report.json").read_text())
    assert report["scene"] == "scene-0003" and report["sets"]["detected"] == 2
    assert report["ground_truth"]["key_frames"] == 2 and report["metrics"]["NDS"] is not None
    assert report["latency_ms"]["network"]["n"] == 2
    assert (out / "input_bag" / "metadata.yaml").is_file() and (out / "detections_bag" / "metadata.yaml").is_file()
    assert "mAP" in (out / "metrics.txt").read_text()
    assert len(list(out.glob("bev_*.png"))) == len(list(out.glob("cameras_*.png"))) == 1
    # a non-empty --out is refused; with --force and --ros the cached world is reused and the node is scored
    assert main(args) == 2
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert main([*args, "--force", "--ros"]) == 0
    text = capsys.readouterr().out
    assert "generating" not in text and "detector_node over ROS 2: 2 of 2 sets answered" in text
    ros = json.loads((out / "report_ros.json").read_text())
    assert ros["dds"]["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and ros["dds"]["ROS_DOMAIN_ID"]
    assert ros["sets_equal_count_to_replay"] == 2 and ros["max_abs_box_difference_to_replay"] < 1e-4
    assert ros["metrics"]["mAP"] is not None
    assert (out / "node_detections_bag" / "metadata.yaml").is_file()


def test_missing_bundled_checkpoint_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake = types.ModuleType("simdistill_ros.models")
    fake.BUNDLED_CHECKPOINT = tmp_path / "simdistill_synth.pt"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "simdistill_ros.models", fake)
    assert main(["demo", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "simdistill_synth.pt") in err and "pass --checkpoint" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()
