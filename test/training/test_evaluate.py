"""training.evaluate: ground truth scores ~perfectly through the devkit, perturbed predictions score
lower, the devkit-free path agrees, the CLI writes atomically, bad input is named."""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from simdistill_ros.cli import main as cli_main
from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.types import Detections
from training import evaluate as ev
from training.data.nuscenes import build_infos

import test_data_minidb as minidb


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic-layout dataroot (splits.json whose names clash with the devkit's 'train'/'val')."""
    return minidb.write_mini_dataroot(tmp_path_factory.mktemp("ev") / "db", scenes=("scene-a", "scene-b", "scene-c"),
                                      splits={"train": ["scene-a"], "val": ["scene-b", "scene-c"]})


def _gt_predictions(infos: list, shift: float = 0.0, seed: int = 0) -> dict[str, Detections]:
    """The infos' boxes as predictions (infos built with min_lidar_pts=1: the devkit ignores ground truth
    without points, so a prediction there would be a false positive)."""
    rng = np.random.default_rng(seed)
    out = {}
    for info in infos:
        boxes = info.gt_boxes.copy()
        scores = np.ones(len(boxes))
        if shift:
            boxes[:, :2] += rng.normal(0, shift, (len(boxes), 2))
            boxes[:, 6] += rng.normal(0, 0.3, len(boxes))
            scores = rng.uniform(0.1, 1.0, len(boxes))
        labels = [CLASS_NAMES.index(n) for n in info.gt_names]
        out[info.token] = Detections(boxes, scores, labels, CLASS_NAMES)
    return out


def _write(path: Path, infos: list, preds: dict[str, Detections]) -> Path:
    results = ev.predictions_to_results(preds, {i.token: i.ego_to_global for i in infos})
    return ev.write_json_atomic(results, path)


def test_ground_truth_scores_perfectly_and_noise_lower(synthetic: Path, tmp_path: Path) -> None:
    infos = build_infos(synthetic, "v1.0-trainval", "val", box_range=None, cache_dir=tmp_path / "c")
    assert len(infos) == 6
    good = ev.evaluate_results(synthetic, "v1.0-trainval", "val", _write(tmp_path / "gt.json", infos, _gt_predictions(infos)),
                               tmp_path / "out_gt", render_curves=False)
    assert good["mAP"] >= 0.99 and good["NDS"] >= 0.9, good
    assert good["mATE"] < 1e-3 and good["mASE"] < 1e-3 and good["mAOE"] < 1e-3 and good["mAVE"] < 1e-3
    assert set(good["per_class"]) == set(CLASS_NAMES) and good["num_samples"] == 6
    saved = json.loads((tmp_path / "out_gt" / "metrics.json").read_text())
    assert saved["mAP"] == good["mAP"] and (tmp_path / "out_gt" / "metrics_details.json").is_file()
    bad = ev.evaluate_results(synthetic, "v1.0-trainval", "val",
                              _write(tmp_path / "noisy.json", infos, _gt_predictions(infos, shift=1.5)),
                              None, render_curves=False)
    assert bad["mAP"] < good["mAP"] - 0.1 and bad["NDS"] < good["NDS"] - 0.1 and bad["mATE"] > 0.3


def test_devkit_free_path_agrees(synthetic: Path, tmp_path: Path) -> None:
    infos = build_infos(synthetic, "v1.0-trainval", "val", box_range=None, cache_dir=tmp_path)
    gt = {i.token: Detections(i.gt_boxes, np.ones(len(i.gt_boxes)), [CLASS_NAMES.index(n) for n in i.gt_names], CLASS_NAMES)
          for i in infos}
    pts = {i.token: i.gt_num_lidar_pts + i.gt_num_radar_pts for i in infos}
    perfect = ev.evaluate_boxes(gt, _gt_predictions(infos), gt_num_pts=pts)
    assert perfect["mAP"] >= 0.99 and perfect["NDS"] >= 0.99
    noisy_preds = _gt_predictions(infos, shift=1.5)
    noisy = ev.evaluate_boxes(gt, noisy_preds, gt_num_pts=pts)
    assert noisy["mAP"] < 0.9
    devkit = ev.evaluate_results(synthetic, "v1.0-trainval", "val", _write(tmp_path / "n.json", infos, noisy_preds),
                                 render_curves=False)
    assert noisy["mAP"] == pytest.approx(devkit["mAP"], abs=1e-6)
    assert noisy["mATE"] == pytest.approx(devkit["mATE"], abs=1e-4)
    assert noisy["mAOE"] == pytest.approx(devkit["mAOE"], abs=1e-4)
    # an empty prediction set scores 0; mismatched samples are refused
    empty = {t: Detections(np.zeros((0, 9)), [], [], CLASS_NAMES) for t in gt}
    assert ev.evaluate_boxes(gt, empty)["mAP"] == 0.0
    with pytest.raises(ValueError, match="different samples"):
        ev.evaluate_boxes(gt, dict(list(empty.items())[1:]))


def test_real_mini_layout(tmp_path: Path) -> None:
    root = minidb.write_mini_dataroot(tmp_path / "mini", version="v1.0-mini", scenes=("scene-0061", "scene-0103"))
    infos = build_infos(root, "v1.0-mini", "val", box_range=None, cache_dir=tmp_path)
    m = ev.evaluate_results(root, "v1.0-mini", "val", _write(tmp_path / "r.json", infos, _gt_predictions(infos)),
                            render_curves=False)
    assert m["mAP"] >= 0.99 and m["NDS"] >= 0.9


def test_cli_eval_plots_and_no_overwrite(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    infos = build_infos(synthetic, "v1.0-trainval", "val", box_range=None, cache_dir=tmp_path)
    res = _write(tmp_path / "res.json", infos, _gt_predictions(infos))
    out = tmp_path / "eval"
    args = ["eval", "--dataroot", str(synthetic), "--version", "v1.0-trainval", "--split", "val", "--results", str(res),
            "--out", str(out)]
    assert cli_main(args) == 0
    assert "mAP: 1.0000" in capsys.readouterr().out
    assert (out / "plots" / "summary.pdf").is_file() and (out / "plots" / "car_pr.pdf").is_file()
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert cli_main(args + ["--no-plots"]) == 2
    assert "exists" in capsys.readouterr().err and (out / "metrics.json").stat().st_mtime_ns == stamp
    assert cli_main(args + ["--no-plots", "--force"]) == 0
    assert not (out / "plots" / "summary.pdf").exists() and json.loads((out / "metrics.json").read_text())["mAP"] >= 0.99
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".eval")]  # no temporaries left
    assert cli_main(["eval", "--dataroot", str(synthetic), "--results", str(res), "--split", "val", "--no-plots"]) == 0
    assert (tmp_path / "res_eval" / "metrics.json").is_file()


def _results(infos: list) -> dict:
    return ev.predictions_to_results(_gt_predictions(infos), {i.token: i.ego_to_global for i in infos})


def test_bad_results_and_dataroots(synthetic: Path, tmp_path: Path) -> None:
    infos = build_infos(synthetic, "v1.0-trainval", "val", cache_dir=tmp_path)
    token = infos[1].token

    def run(obj: object | str) -> None:
        p = tmp_path / "bad.json"
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        ev.evaluate_results(synthetic, "v1.0-trainval", "val", p, render_curves=False)

    with pytest.raises(ValueError, match="bad.json is empty"):
        run("")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        run("{\"results\": [")
    with pytest.raises(ValueError, match="'results' mapping"):
        run({"meta": {}})
    r = _results(infos)
    r["results"][token][0]["translation"][0] = math.nan
    with pytest.raises(ValueError, match=f"sample {token} box 0: field 'translation' has NaN"):
        run(r)  # json.dumps writes the NaN literal
    r = _results(infos)
    r["results"][token][0]["detection_name"] = "spaceship"
    with pytest.raises(ValueError, match=f"sample {token} box 0: unknown detection_name"):
        run(r)
    r = _results(infos)
    r["results"][token][0]["attribute_name"] = "vehicle.flying"
    with pytest.raises(ValueError, match=f"sample {token} box 0: unknown attribute_name 'vehicle.flying'"):
        run(r)
    r = _results(infos)
    r["results"][token][0]["detection_score"] = True
    with pytest.raises(ValueError, match=f"sample {token} box 0: detection_score must be a finite number, got True"):
        run(r)
    r = _results(infos)
    del r["results"][token]
    with pytest.raises(ValueError, match=f"1 samples missing .*{token}"):
        run(r)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        ev.evaluate_results(synthetic, "v1.0-trainval", "val", tmp_path / "nothere.json")
    good = _write(tmp_path / "good.json", infos, _gt_predictions(infos))
    with pytest.raises(ValueError, match="unknown nuScenes version 'v2.0'"):
        ev.evaluate_results(synthetic, "v2.0", "val", good)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ev.evaluate_results(tmp_path / "nowhere", "v1.0-trainval", "val", good)
    nan_preds = _gt_predictions(infos)
    boxes = nan_preds[token].boxes.copy()
    boxes[0, 7] = np.nan
    nan_preds[token] = Detections(boxes, nan_preds[token].scores, nan_preds[token].labels, CLASS_NAMES)
    with pytest.raises(ValueError, match=f"sample {token}: prediction 0 has NaN"):
        ev.predictions_to_results(nan_preds, {i.token: i.ego_to_global for i in infos})
    with pytest.raises(FileExistsError):
        ev.write_json_atomic({}, good)


def test_outputs_get_umask_permissions(synthetic: Path, tmp_path: Path) -> None:
    """The eval folder and results JSON are published like a plain mkdir / open (not owner-only)."""
    infos = build_infos(synthetic, "v1.0-trainval", "val", box_range=None, cache_dir=tmp_path)
    old = os.umask(0o022)
    try:
        res = _write(tmp_path / "res.json", infos, _gt_predictions(infos))
        out = tmp_path / "eval"
        gt = {i.token: Detections(i.gt_boxes, np.ones(len(i.gt_boxes)), [CLASS_NAMES.index(n) for n in i.gt_names],
                                  CLASS_NAMES) for i in infos}
        ev.evaluate_boxes(gt, _gt_predictions(infos), out_dir=out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and stat.S_IMODE(res.stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644


def test_default_attributes_are_mmdet3d_defaults() -> None:
    """mmdet3d's NuScenesDataset.DefaultAttribute (bus defaults to moving, the other vehicles to parked)."""
    assert ev.DEFAULT_ATTRIBUTES == {
        "car": "vehicle.parked", "pedestrian": "pedestrian.moving", "trailer": "vehicle.parked",
        "truck": "vehicle.parked", "bus": "vehicle.moving", "motorcycle": "cycle.without_rider",
        "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider", "barrier": "",
        "traffic_cone": ""}


def test_attribute_rule_is_mmdet3ds() -> None:
    """method.md section 8 / mmdet3d's output formatting, hand-written cases: moving above 0.2 m/s."""
    cases = [("car", 0.0, 0.0, "vehicle.parked"), ("car", 0.15, 0.15, "vehicle.moving"),  # |v| = 0.212
             ("car", 0.14, 0.14, "vehicle.parked"), ("bus", 3.0, 0.0, "vehicle.moving"),
             ("bus", 0.1, 0.0, "vehicle.stopped"), ("truck", 0.0, -1.0, "vehicle.moving"),
             ("trailer", 0.0, 0.0, "vehicle.parked"), ("construction_vehicle", 0.0, 0.1, "vehicle.parked"),
             ("bicycle", 2.0, 0.0, "cycle.with_rider"), ("motorcycle", 0.0, 0.0, "cycle.without_rider"),
             ("pedestrian", 1.2, 0.3, "pedestrian.moving"), ("pedestrian", 0.0, 0.05, "pedestrian.standing"),
             ("barrier", 5.0, 0.0, ""), ("traffic_cone", 0.0, 0.0, "")]
    for name, vx, vy, want in cases:
        assert ev.attribute_for(name, vx, vy) == want, (name, vx, vy)
    boxes9 = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.0, 0.0, 3.0], [5.0, 1.0, 0.5, 0.7, 0.7, 1.8, 0.0, 0.0, 0.0]])
    det = Detections(boxes9, np.array([0.9, 0.8]), [CLASS_NAMES.index("bus"), CLASS_NAMES.index("pedestrian")],
                     CLASS_NAMES)
    boxes = ev.detections_to_boxes("tok", det, np.eye(4))
    assert [b["attribute_name"] for b in boxes] == ["vehicle.moving", "pedestrian.standing"]
    with pytest.raises(ValueError, match="unknown class 'spaceship'"):
        ev.attribute_for("spaceship", 0.0, 0.0)
