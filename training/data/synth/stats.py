"""Statistics of a written nuScenes-format dataroot, for comparing the synthetic world with nuScenes.

Read from the table JSON files alone (no devkit, no images): annotations per class and per sample, the
share of annotations without LiDAR points, the visibility histogram, per-class size means and
coefficients of variation, and two measures of how much a single camera image gives depth away:
- ground-contact depth: the depth a camera would infer for a box from the image row of its bottom
  centre, if the ground were the ego frame's z = 0 plane (flat road, no body pitch or roll);
- size depth: the depth inferred from the box's apparent height with the class-mean height.
Both are reported as the median and 90th percentile of |estimate / true depth - 1| over the boxes in
front of a camera within 60 m of it, each box seen from the camera that sees it most centrally.
`simdistill synth --stats` prints them as a markdown table (docs/synthetic_world.md).
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pyquaternion import Quaternion

from training.data.synth.tables import VISIBILITY

DETECTION_OF_CATEGORY = {
    "vehicle.car": "car", "vehicle.truck": "truck", "vehicle.construction": "construction_vehicle",
    "vehicle.bus.rigid": "bus", "vehicle.bus.bendy": "bus", "vehicle.trailer": "trailer",
    "movable_object.barrier": "barrier", "vehicle.motorcycle": "motorcycle", "vehicle.bicycle": "bicycle",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
}


def _transform(rec: dict[str, Any]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
    T[:3, 3] = rec["translation"]
    return T


def _load(root: Path, version: str, name: str) -> list[dict[str, Any]]:
    path = root / version / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise FileNotFoundError(f"cannot read table {path}: {e.strerror}") from e


def world_stats(dataroot: str | os.PathLike[str], version: str = "v1.0-trainval") -> dict[str, Any]:
    """The statistics of a dataroot's tables (see the module docstring)."""
    root = Path(dataroot)
    anns = _load(root, version, "sample_annotation")
    samples = {s["token"]: s for s in _load(root, version, "sample")}
    category = {c["token"]: c["name"] for c in _load(root, version, "category")}
    instance = {i["token"]: category[i["category_token"]] for i in _load(root, version, "instance")}
    sd = _load(root, version, "sample_data")
    poses = {p["token"]: p for p in _load(root, version, "ego_pose")}
    calib = {c["token"]: c for c in _load(root, version, "calibrated_sensor")}
    cams_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    lidar_pose: dict[str, np.ndarray] = {}
    for rec in sd:
        if not rec["is_key_frame"]:
            continue
        cs = calib[rec["calibrated_sensor_token"]]
        if cs["camera_intrinsic"]:
            cams_of[rec["sample_token"]].append(cs)
        else:
            lidar_pose[rec["sample_token"]] = _transform(poses[rec["ego_pose_token"]])

    counts: dict[str, int] = defaultdict(int)
    zero: dict[str, int] = defaultdict(int)
    sizes: dict[str, list[list[float]]] = defaultdict(list)
    vis = defaultdict(int)
    ground_err, size_err = [], []
    for a in anns:
        name = DETECTION_OF_CATEGORY.get(instance[a["instance_token"]])
        if name is None:
            continue
        counts[name] += 1
        zero[name] += a["num_lidar_pts"] == 0
        sizes[name].append(a["size"])
        vis[a["visibility_token"]] += 1
    means = {n: np.mean(sizes[n], axis=0) for n in sizes}
    for a in anns:
        name = DETECTION_OF_CATEGORY.get(instance[a["instance_token"]])
        if name is None:
            continue
        errs = _depth_cue_errors(a, means[name][2], lidar_pose[a["sample_token"]], cams_of[a["sample_token"]])
        if errs is not None:
            ground_err.append(errs[0])
            size_err.append(errs[1])
    total = sum(counts.values())
    order = sorted(counts, key=lambda n: -counts[n])
    return {
        "samples": len(samples),
        "annotations": total,
        "annotations_per_sample": total / max(1, len(samples)),
        "zero_point_share": sum(zero.values()) / max(1, total),
        "classes": {n: {"count": counts[n], "share": counts[n] / total, "zero_point_share": zero[n] / counts[n],
                        "size_mean_wlh": [float(v) for v in means[n]],
                        "size_cv_wlh": [float(v) for v in np.std(sizes[n], axis=0) / means[n]]} for n in order},
        "visibility": {lvl: vis[tok] / max(1, total) for tok, lvl, _ in VISIBILITY},
        "ground_contact_depth_error": _percentiles(ground_err),
        "size_depth_error": _percentiles(size_err),
        "depth_boxes": len(ground_err),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": math.nan, "p90": math.nan}
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def _depth_cue_errors(ann: dict[str, Any], mean_height: float, ego_to_global: np.ndarray,
                      cameras: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(|ground-contact depth / true - 1|, |size depth / true - 1|) of one box from the camera that
    sees its centre nearest the image centre (None when no camera sees it within 60 m)."""
    global_to_ego = np.linalg.inv(ego_to_global)
    R = Quaternion(ann["rotation"]).rotation_matrix
    w, l, h = ann["size"]
    bottom = np.asarray(ann["translation"]) - R[:, 2] * h / 2  # bottom centre, global
    best = None
    for cs in cameras:
        ego_to_cam = np.linalg.inv(_transform(cs))
        K = np.asarray(cs["camera_intrinsic"])
        p = ego_to_cam[:3, :3] @ (global_to_ego[:3, :3] @ bottom + global_to_ego[:3, 3]) + ego_to_cam[:3, 3]
        if not 1.0 < p[2] < 60.0:
            continue
        uv = K @ p / p[2]
        off = abs(uv[0] - K[0, 2]) / K[0, 0]
        if off > 0.6 or (best is not None and off >= best[0]):
            continue
        # the ray of that pixel meets the ego frame's z = 0 plane at depth d (camera frame)
        cam_to_ego = _transform(cs)
        ray = cam_to_ego[:3, :3] @ np.linalg.solve(K, uv)
        origin = cam_to_ego[:3, 3]
        d = -origin[2] / ray[2] if ray[2] < -1e-9 else math.inf
        best = (off, abs(d / p[2] - 1.0) if math.isfinite(d) else 1.0, abs(mean_height / h - 1.0))
    return None if best is None else (min(best[1], 1.0), best[2])


def format_markdown(stats: dict[str, Any]) -> str:
    """The statistics as markdown tables."""
    lines = [f"{stats['annotations']} annotations in {stats['samples']} samples "
             f"({stats['annotations_per_sample']:.1f} per sample); "
             f"{100 * stats['zero_point_share']:.1f} % without LiDAR points.", "",
             "| class | annotations | share | without LiDAR points | mean size w, l, h (m) | size CV w, l, h |",
             "|---|---:|---:|---:|---|---|"]
    for name, c in stats["classes"].items():
        mean = ", ".join(f"{v:.2f}" for v in c["size_mean_wlh"])
        cv = ", ".join(f"{100 * v:.0f} %" for v in c["size_cv_wlh"])
        lines.append(f"| {name} | {c['count']} | {100 * c['share']:.1f} % | {100 * c['zero_point_share']:.1f} % "
                     f"| {mean} | {cv} |")
    lines += ["", "| visibility | " + " | ".join(stats["visibility"]) + " |",
              "|---|" + "---:|" * len(stats["visibility"]),
              "| share | " + " | ".join(f"{100 * v:.1f} %" for v in stats["visibility"].values()) + " |", ""]
    g, s = stats["ground_contact_depth_error"], stats["size_depth_error"]
    lines += ["| monocular depth cue (boxes within 60 m of a camera) | median error | 90th percentile |",
              "|---|---:|---:|",
              f"| ground contact on a flat ego-frame ground plane | {100 * g['median']:.1f} % "
              f"| {100 * g['p90']:.1f} % |",
              f"| apparent height with the class-mean height | {100 * s['median']:.1f} % | {100 * s['p90']:.1f} % |"]
    return "\n".join(lines)
