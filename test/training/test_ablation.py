"""`simdistill ablation` end to end at a drastically reduced scale: the tiny world, a two-camera small
model, one step per run, two seeds for baseline and SimDistill, one for each single ablation, the runs after
the teacher in two spawned processes (--jobs 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train_helpers
from simdistill_ros.cli import main as cli_main
from simdistill_ros.core.checkpoint import load_checkpoint
from simdistill_ros.core.config import DetectorConfig
from training import ablation
from training.config import load_train_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = ("teacher", "baseline", "SimDistill", "w/o CMD", "w/o GCM", "w/o MMD-P")


def test_ablation_trains_every_row_and_writes_the_table(tiny_world: Path, small_config: DetectorConfig,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_helpers.train_config(tmp_path, train_helpers.two_camera(small_config), name="ablation",
                               schedule={"eval_every": 1})
    out, doc = tmp_path / "abl", tmp_path / "ablation.md"
    args = ["ablation", "--out", str(out), "--world", str(tiny_world), "--config",
            str(train_helpers.config_path(tmp_path, "ablation")), "--seeds", "2", "--ablation-seeds", "1",
            "--teacher-epochs", "1", "--no-progress", "--doc", str(doc), "--jobs", "2"]
    assert cli_main(args) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in report["rows"]] == list(ROWS)
    assert [len(r["seeds"]) for r in report["rows"]] == [1, 2, 2, 1, 1, 1]
    # every number in the table is the devkit's metrics.json of that run's val evaluation
    runs = out / "runs"
    for row in report["rows"]:
        for s in row["seeds"]:
            slug = row["name"].lower().replace("w/o ", "no-").replace(" ", "-")
            metrics = json.loads((runs / f"{slug}-seed{s['seed']}" / "eval" / "epoch_0001" / "metrics" /
                                  "metrics.json").read_text())
            assert s["mAP"] == metrics["mAP"] and s["NDS"] == metrics["NDS"] and s["mATE"] == metrics["mATE"]
            assert s["car AP"] == metrics["per_class"]["car"]["AP"] and s["car ATE"] == metrics["per_class"]["car"]["ATE"]
    base = report["rows"][1]["summary"]["NDS"]
    assert base["n"] == 2 and base["std"] is not None and base["min"] <= base["mean"] <= base["max"]
    table = doc.read_text()
    assert table == (out / "ablation.md").read_text()
    for name in ROWS:
        assert f"| {name} |" in table
    assert "simdistill ablation --out" in table and "Machine:" in table and " ± " in table and "| car AP |" in table
    assert all(w is not None and w > 0 for w in (r["wall_s"] for r in report["runs"]))

    def terms(run: str) -> set[str]:
        return set(json.loads((runs / run / "metrics.jsonl").read_text().splitlines()[0]))

    assert {"imd", "cmd", "mmd_f", "mmd_p.cls"} <= terms("simdistill-seed0")
    assert not {"imd", "cmd", "mmd_f", "mmd_p.cls"} & terms("baseline-seed1")
    assert "cmd" not in terms("no-cmd-seed0") and "imd" in terms("no-cmd-seed0")
    assert "mmd_p.cls" not in terms("no-mmd-p-seed0") and "cmd" in terms("no-mmd-p-seed0")
    _, gcm_off, meta = load_checkpoint(runs / "no-gcm-seed0" / "student.pt")
    assert not gcm_off["gcm.output_proj.weight"].any() and not gcm_off["gcm.output_proj.bias"].any()
    _, baseline, meta = load_checkpoint(runs / "baseline-seed0" / "student.pt")
    assert meta["encoder_init"].startswith("teacher:") and not torch.equal(baseline["gcm.output_proj.weight"],
                                                                            gcm_off["gcm.output_proj.weight"])
    # a run trained in a --jobs worker equals the same run trained in this process
    config = load_train_config(train_helpers.config_path(tmp_path, "ablation"))
    row = next(r for r in ablation.rows(2, 1) if r.name == "SimDistill")
    final, _, _ = ablation._train_run(row, 1, config, tiny_world, tmp_path / "again", runs / "teacher-seed0" /
                                      "teacher.pt", "cpu", False, "test", 1)
    _, again, _ = load_checkpoint(final)
    _, pooled, _ = load_checkpoint(runs / "simdistill-seed1" / "student.pt")
    assert again.keys() == pooled.keys() and all(torch.equal(again[k], pooled[k]) for k in again)
    # an existing --doc is not overwritten without --force
    assert cli_main(args) == 2
    assert "--doc file" in capsys.readouterr().err
    # run again with --force: every finished run is reused, not retrained, and the table is the same
    assert cli_main([*args, "--force"]) == 0
    again_report = json.loads((out / "ablation.json").read_text())
    assert [r["wall_s"] for r in again_report["runs"]] == [None] * 8 and again_report["rows"] == report["rows"]
    assert "teacher-seed0 reused" in doc.read_text()
