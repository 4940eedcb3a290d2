"""nuScenes detection evaluation: predictions -> results JSON, scored by the devkit's DetectionEval
(config `detection_cvpr_2019`), metrics JSON and the devkit's plots; and the `simdistill eval` command.

- `predictions_to_results`: ego-frame Detections per sample -> nuScenes submission (global frame via
  each sample's ego_to_global; velocities rotated to global). The model has no attribute head:
  attributes follow the rule behind the published BEVFusion/SimDistill numbers (mmdet3d's result
  formatting, method.md section 8): `attribute_for` from the class and the speed (moving above 0.2 m/s).
- `evaluate_results(dataroot, version, split, results_path, out_dir)`: scores a results file against the
  split's ground truth loaded with the devkit's own logic (load_gt_of_sample_tokens, add_center_dist,
  filter_eval_boxes). The split's samples come from training.data.nuscenes (splits.json for synthetic
  data, else the devkit's predefined splits), so synthetic splits named 'train'/'val' work too.
- `evaluate_boxes(gt, preds)`: the same metrics without a dataroot (e.g. rosbag replay): boxes in each
  sample's ego frame, distance and zero-point filters as the devkit's (no bike-rack filter).
Outputs are written atomically (a temporary folder, then a rename); an existing output folder is only
replaced with force=True.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.frames import yaw_rotation
from simdistill_ros.core.types import Detections
from training.fsutil import atomic_dir, check_absent, write_bytes_atomic

if TYPE_CHECKING:
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionConfig

DEFAULT_ATTRIBUTES: dict[str, str] = {
    "car": "vehicle.parked",
    "truck": "vehicle.parked",
    "bus": "vehicle.moving",
    "trailer": "vehicle.parked",
    "construction_vehicle": "vehicle.parked",
    "pedestrian": "pedestrian.moving",
    "motorcycle": "cycle.without_rider",
    "bicycle": "cycle.without_rider",
    "barrier": "",
    "traffic_cone": "",
}
MOVING_SPEED = 0.2  # m/s: mmdet3d's threshold between moving and standing attributes
MOVING_ATTRIBUTES: dict[str, str] = {
    "car": "vehicle.moving", "truck": "vehicle.moving", "bus": "vehicle.moving", "trailer": "vehicle.moving",
    "construction_vehicle": "vehicle.moving", "motorcycle": "cycle.with_rider", "bicycle": "cycle.with_rider",
}
STANDING_ATTRIBUTES: dict[str, str] = {"pedestrian": "pedestrian.standing", "bus": "vehicle.stopped"}
EVAL_CONFIG = "detection_cvpr_2019"
TP_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
DEFAULT_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}


# ----------------------------------------------------------------------------------------------------
# predictions -> results

def attribute_for(name: str, vx: float, vy: float) -> str:
    """The attribute of a box of class `name` with velocity (vx, vy) (m/s, any frame), by mmdet3d's
    result formatting: above MOVING_SPEED vehicles are moving, cycles have a rider and pedestrians keep
    their default (moving); otherwise pedestrians stand, buses are stopped and the rest keep their
    default (parked vehicles, cycles without rider). Barriers and cones have none ('')."""
    if name not in DEFAULT_ATTRIBUTES:
        raise ValueError(f"unknown class {name!r}")
    if math.hypot(vx, vy) > MOVING_SPEED:
        return MOVING_ATTRIBUTES.get(name, DEFAULT_ATTRIBUTES[name])
    return STANDING_ATTRIBUTES.get(name, DEFAULT_ATTRIBUTES[name])


def _quaternion_wxyz(R: np.ndarray) -> list[float]:
    from pyquaternion import Quaternion

    return [float(v) for v in Quaternion(matrix=R, atol=1e-6, rtol=1e-6).elements]


def detections_to_boxes(token: str, det: Detections, ego_to_global: np.ndarray,
                        what: str = "prediction") -> list[dict[str, Any]]:
    """nuScenes result boxes (dicts) of one sample; ValueError naming the token and the `what` on
    NaN/inf values or an unknown class."""
    T = np.asarray(ego_to_global, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"sample {token}: ego_to_global must be a finite 4x4 matrix")
    boxes = np.asarray(det.boxes, dtype=np.float64)
    bad = ~np.all(np.isfinite(boxes), axis=1) | ~np.isfinite(det.scores)
    if bad.any():
        raise ValueError(f"sample {token}: {what} {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    out = []
    for box, score, name in zip(boxes, det.scores, det.names):
        if name not in DEFAULT_ATTRIBUTES:
            raise ValueError(f"sample {token}: {what} of unknown class {name!r}")
        x, y, z, l, w, h, yaw, vx, vy = box
        centre = T[:3, :3] @ np.array([x, y, z]) + T[:3, 3]
        vel = T[:3, :3] @ np.array([vx, vy, 0.0])
        out.append({
            "sample_token": token,
            "translation": [float(v) for v in centre],
            "size": [float(w), float(l), float(h)],
            "rotation": _quaternion_wxyz(T[:3, :3] @ yaw_rotation(yaw)),
            "velocity": [float(vel[0]), float(vel[1])],
            "detection_name": name,
            "detection_score": float(score),
            "attribute_name": attribute_for(name, float(vx), float(vy)),
        })
    return out


def predictions_to_results(preds: Mapping[str, Detections], ego_to_global: Mapping[str, np.ndarray],
                           meta: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """A nuScenes submission {"meta", "results"} from ego-frame detections keyed by sample token."""
    results = {}
    for token, det in preds.items():
        if token not in ego_to_global:
            raise ValueError(f"sample {token}: no ego_to_global pose given")
        results[token] = detections_to_boxes(token, det, ego_to_global[token])
    return {"meta": dict(meta or DEFAULT_META), "results": results}


def write_json_atomic(obj: Any, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write JSON via a temporary file and a rename; an existing file is kept unless force."""
    return write_bytes_atomic(json.dumps(obj).encode(), path, force)


# ----------------------------------------------------------------------------------------------------
# loading and checking a results file

def _check_box(path: Path, token: str, i: int, box: Any) -> None:
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES

    where = f"{path}: sample {token} box {i}"
    if not isinstance(box, dict):
        raise ValueError(f"{where}: expected an object, got {type(box).__name__}")
    for key, n in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
        v = box.get(key)
        if not isinstance(v, list) or len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ValueError(f"{where}: field {key!r} must be a list of {n} numbers, got {v!r}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"{where}: field {key!r} has NaN or infinite values")
    if box.get("sample_token") != token:
        raise ValueError(f"{where}: sample_token {box.get('sample_token')!r} differs from its key")
    if box.get("detection_name") not in CLASS_NAMES:
        raise ValueError(f"{where}: unknown detection_name {box.get('detection_name')!r}")
    score = box.get("detection_score")
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise ValueError(f"{where}: detection_score must be a finite number, got {score!r}")
    if min(box["size"]) <= 0 or sum(x * x for x in box["rotation"]) < 1e-12:
        raise ValueError(f"{where}: non-positive size or zero rotation quaternion")
    if box.get("attribute_name", "") not in ("", *ATTRIBUTE_NAMES):
        raise ValueError(f"{where}: unknown attribute_name {box.get('attribute_name')!r}")


def load_results(path: str | os.PathLike[str], max_boxes_per_sample: int = 500) -> tuple[EvalBoxes, dict[str, Any]]:
    """Read and check a results JSON; ValueError naming the file (and sample token) when malformed."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    text = path.read_text()
    if not text.strip():
        raise ValueError(f"results file {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"results file {path}: expected an object with a 'results' mapping of sample token -> boxes")
    for token, boxes in data["results"].items():
        if not isinstance(boxes, list):
            raise ValueError(f"{path}: sample {token}: expected a list of boxes")
        if len(boxes) > max_boxes_per_sample:
            raise ValueError(f"{path}: sample {token}: {len(boxes)} boxes, more than {max_boxes_per_sample}")
        for i, box in enumerate(boxes):
            _check_box(path, token, i, box)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else dict(DEFAULT_META)
    normalised = {t: [{**b, "attribute_name": b.get("attribute_name", "")} for b in boxes]
                  for t, boxes in data["results"].items()}
    return EvalBoxes.deserialize(normalised, DetectionBox), meta


# ----------------------------------------------------------------------------------------------------
# scoring

def detection_config() -> DetectionConfig:
    from nuscenes.eval.common.config import config_factory

    return config_factory(EVAL_CONFIG)


def _clean(v: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def summarize(devkit_summary: Mapping[str, Any], num_samples: int) -> dict[str, Any]:
    """Our metrics JSON: mAP, NDS, TP errors (mATE...), per-class AP and TP errors, the devkit summary."""
    per_class = {}
    for name, ap in devkit_summary["mean_dist_aps"].items():
        tps = devkit_summary["label_tp_errors"][name]
        per_class[name] = {"AP": ap, **{TP_NAMES[k][1:]: v for k, v in tps.items()}}
    return _clean({
        "mAP": devkit_summary["mean_ap"],
        "NDS": devkit_summary["nd_score"],
        **{TP_NAMES[k]: v for k, v in devkit_summary["tp_errors"].items()},
        "per_class": per_class,
        "num_samples": num_samples,
        "eval_config": EVAL_CONFIG,
        "devkit": devkit_summary,
    })


def score(gt: EvalBoxes, pred: EvalBoxes, meta: Mapping[str, Any] | None = None,
          out_dir: str | os.PathLike[str] | None = None, render_curves: bool = False, force: bool = False,
          config: DetectionConfig | None = None) -> dict[str, Any]:
    """Run the devkit's DetectionEval on already filtered EvalBoxes (with ego_translation set).

    Writes, when out_dir is given: metrics.json (summarize), metrics_details.json and plots/*.pdf.
    Returns the metrics dict."""
    import matplotlib

    matplotlib.use("Agg")
    from nuscenes.eval.detection.evaluate import DetectionEval

    if out_dir is not None:
        check_absent(out_dir, force, "output folder")
    ev = DetectionEval.__new__(DetectionEval)
    ev.cfg = config or detection_config()
    ev.gt_boxes, ev.pred_boxes = gt, pred
    ev.sample_tokens = gt.sample_tokens
    ev.meta = dict(meta or DEFAULT_META)
    ev.verbose = False
    ev.eval_set = "custom"
    metrics, md_list = ev.evaluate()
    summary = metrics.serialize()
    summary["meta"] = ev.meta
    result = summarize(summary, len(gt.sample_tokens))
    if out_dir is None:
        return result
    with atomic_dir(out_dir, force) as tmp:
        ev.output_dir = str(tmp)
        ev.plot_dir = str(tmp / "plots")
        os.makedirs(ev.plot_dir)
        if render_curves:
            ev.render(metrics, md_list)
            import matplotlib.pyplot as plt

            plt.close("all")
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2))
        (tmp / "metrics_details.json").write_text(json.dumps(_clean(md_list.serialize())))
    return result


def _filter_without_db(boxes: EvalBoxes, class_range: Mapping[str, float]) -> EvalBoxes:
    """The devkit's distance and zero-point filters (filter_eval_boxes) for boxes with ego_translation."""
    for token in boxes.sample_tokens:
        boxes.boxes[token] = [b for b in boxes[token] if b.ego_dist < class_range[b.detection_name] and b.num_pts != 0]
    return boxes


def _eval_boxes(dets: Mapping[str, Detections], num_pts: Mapping[str, np.ndarray] | None, is_gt: bool) -> EvalBoxes:
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    out = EvalBoxes()
    for token, det in dets.items():
        pts = None if num_pts is None else np.asarray(num_pts[token])
        items = []
        what = "ground-truth box" if is_gt else "prediction"
        for i, content in enumerate(detections_to_boxes(token, det, np.eye(4), what)):
            content.update(ego_translation=content["translation"], num_pts=-1 if pts is None else int(pts[i]))
            if is_gt:
                del content["detection_score"]  # DetectionBox's ground-truth score is -1
            items.append(DetectionBox.deserialize(content))
        out.add_boxes(token, items)
    return out


def evaluate_boxes(gt: Mapping[str, Detections], preds: Mapping[str, Detections],
                   gt_num_pts: Mapping[str, np.ndarray] | None = None,
                   out_dir: str | os.PathLike[str] | None = None, render_curves: bool = False,
                   force: bool = False) -> dict[str, Any]:
    """nuScenes metrics without a dataroot. gt and preds: Detections in each sample's ego frame, keyed
    by the same sample tokens (a sample with no predictions maps to empty Detections). gt_num_pts: per
    sample, LiDAR(+radar) points in each gt box; boxes with 0 are ignored as in the devkit. Attributes
    follow `attribute_for` on both sides (so mAAE measures how often the speed falls on the other side
    of MOVING_SPEED)."""
    missing = sorted(set(gt) - set(preds))
    extra = sorted(set(preds) - set(gt))
    if missing or extra:
        raise ValueError(f"predictions and ground truth cover different samples: missing {missing[:3]}, extra {extra[:3]}")
    if not gt:
        raise ValueError("no samples to evaluate")
    cfg = detection_config()
    gt_boxes = _filter_without_db(_eval_boxes(gt, gt_num_pts, True), cfg.class_range)
    pred_boxes = _filter_without_db(_eval_boxes(preds, None, False), cfg.class_range)
    return score(gt_boxes, pred_boxes, out_dir=out_dir, render_curves=render_curves, force=force, config=cfg)


def evaluate_results(dataroot: str | os.PathLike[str], version: str, split: str,
                     results_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                     render_curves: bool = True, force: bool = False) -> dict[str, Any]:
    """Score a results JSON on `split` of a nuScenes(-format) dataroot through the devkit."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox

    from training.data.nuscenes import check_dataroot, load_nuscenes, split_samples, split_scene_names, splits_file

    if out_dir is not None:
        check_absent(out_dir, force, "output folder")
    check_dataroot(dataroot, version)
    scenes = split_scene_names(dataroot, version, split)
    pred, meta = load_results(results_path)
    nusc = load_nuscenes(dataroot, version)
    tokens = [t for t, _ in split_samples(nusc, scenes, strict=splits_file(dataroot, version) is not None)]
    if not tokens:
        raise ValueError(f"split {split!r} of {dataroot} has no samples")
    missing = [t for t in tokens if t not in pred.boxes]
    token_set = set(tokens)
    extra = [t for t in pred.sample_tokens if t not in token_set]
    if missing or extra:
        raise ValueError(f"results file {results_path} does not match split {split!r}: "
                         f"{len(missing)} samples missing (e.g. {missing[:3]}), {len(extra)} not in the split "
                         f"(e.g. {extra[:3]})")
    cfg = detection_config()
    gt = load_gt_of_sample_tokens(nusc, tokens, DetectionBox, verbose=False)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), cfg.class_range)
    pred = filter_eval_boxes(nusc, add_center_dist(nusc, pred), cfg.class_range)
    return score(gt, pred, meta, out_dir, render_curves, force, cfg)


# ----------------------------------------------------------------------------------------------------
# CLI: simdistill eval

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes(-format) dataroot")
    parser.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-trainval or v1.0-mini")
    parser.add_argument("--split", default="val", help="split name (splits.json of a synthetic dataroot, else the devkit's)")
    parser.add_argument("--results", required=True, help="nuScenes results JSON")
    parser.add_argument("--out", default=None, help="output folder (default: <results stem>_eval next to the results)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip the devkit's PR/TP curve plots")


def main(args: argparse.Namespace) -> int:
    results = Path(args.results)
    out = Path(args.out) if args.out else results.with_name(f"{results.stem}_eval")
    m = evaluate_results(args.dataroot, args.version, args.split, results, out, render_curves=not args.no_plots,
                         force=args.force)

    def fmt(v: Any) -> str:
        return "  nan" if v is None else f"{v:.4f}"

    print(f"mAP: {fmt(m['mAP'])}  NDS: {fmt(m['NDS'])}  " + "  ".join(f"{k}: {fmt(m[k])}" for k in TP_NAMES.values()))
    for name, row in m["per_class"].items():
        print(f"  {name:<22} AP {fmt(row['AP'])}  " + "  ".join(f"{k} {fmt(v)}" for k, v in row.items() if k != "AP"))
    print(f"wrote {out / 'metrics.json'}")
    return 0
