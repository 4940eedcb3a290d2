"""`simdistill eval-model`: a checkpoint and the same seeded random weights score identically, the
summary holds the devkit's metrics, and an existing --out is kept without --force."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simdistill_ros.cli import main as cli_main
from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import load_preset
from simdistill_ros.core.model.student import Student


def test_checkpoint_and_untrained_weights_agree(tiny_world: Path, tmp_path: Path, one_thread: None,
                                                capsys: pytest.CaptureFixture) -> None:
    config = load_preset("demo")
    torch.manual_seed(3)
    ckpt = save_checkpoint(tmp_path / "random.pt", Student(config.model, config.geometry).state_dict(), config)
    common = ["--dataroot", str(tiny_world), "--split", "val", "--workers", "0"]
    assert cli_main(["eval-model", "--untrained", "demo", "--seed", "3", "--out", str(tmp_path / "a"), *common]) == 0
    assert cli_main(["eval-model", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), *common]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())["results"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["results"]
    assert sum(len(boxes) for boxes in a.values()) > 0 and a == b
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["samples"] == 3 and set(summary["AP"]) == set(config.model.class_names)
    assert 0.0 <= summary["mAP"] <= 1.0 and summary["mATE"] > 0
    before = (tmp_path / "b" / "summary.json").read_bytes()
    assert cli_main(["eval-model", "--untrained", "demo", "--seed", "4", "--out", str(tmp_path / "b"), *common]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "b" / "summary.json").read_bytes() == before
