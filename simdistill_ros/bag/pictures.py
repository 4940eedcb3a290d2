"""PNG pictures of a replayed set: a bird's-eye view of predictions against ground truth (matplotlib), and the
set's camera images with the predicted and ground-truth boxes projected into them (OpenCV drawing).

Boxes are (x, y, z_centre, l, w, h, yaw, vx, vy) in the target frame (base_link: x forward, y left); a
camera sees a box corner p through K @ (ego_to_cam @ p), ego_to_cam = inverse of its cam_to_ego.
Files are written under a temporary name and renamed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simdistill_ros.core.types import Detections, Frame
from simdistill_ros.ros.markers import CLASS_COLORS, EDGES, OTHER_COLOR, box_corners

GT_COLOR = (0.1, 0.8, 0.1)


def _replace(tmp: Path, path: Path) -> Path:
    os.replace(tmp, path)
    return path


def draw_bev(path: Path, pred: Detections, gt: Detections | None, title: str, radius_m: float = 54.0) -> Path:
    """Top view (x forward up the page, y left to the left): ground truth in green, predictions in their
    class colours with the score as opacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    for det, is_gt in ((gt, True), (pred, False)):
        if det is None or not len(det):
            continue
        corners = box_corners(det.boxes)[:, :4, :2]  # bottom face, M x 4 x 2
        for i, (c, name) in enumerate(zip(corners, det.names)):
            loop = np.vstack([c, c[:1]])
            colour = GT_COLOR if is_gt else CLASS_COLORS.get(name, OTHER_COLOR)
            alpha = 1.0 if is_gt else float(np.clip(0.3 + 0.7 * det.scores[i], 0.0, 1.0))
            ax.plot(-loop[:, 1], loop[:, 0], color=colour, lw=2.0 if is_gt else 1.2, alpha=alpha,
                    ls="-" if is_gt else "--")
            front = (c[0] + c[3]) / 2  # heading tick: centre to the front face
            centre = c.mean(axis=0)
            ax.plot([-centre[1], -front[1]], [centre[0], front[0]], color=colour, lw=1.0, alpha=alpha)
    ax.plot([0], [0], marker="^", color="k", ms=8)
    ax.set_xlim(-radius_m, radius_m)
    ax.set_ylim(-radius_m, radius_m)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (m, right)")
    ax.set_ylabel("x (m, forward)")
    n_gt = 0 if gt is None else len(gt)
    ax.set_title(f"{title}\npredictions (dashed, class colours): {len(pred)}, ground truth (green): {n_gt}", fontsize=9)
    ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    return _replace(tmp, path)


def _project(corners_m83: np.ndarray, K: np.ndarray, cam_to_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M x 8 x 2 pixels, M x 8 in front of the camera) of ego-frame corners."""
    ego_to_cam = np.linalg.inv(cam_to_ego)
    pts = corners_m83 @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
    z = pts[..., 2]
    uv = (pts @ K.T)[..., :2] / np.maximum(z, 1e-6)[..., None]
    return uv, z > 0.1


def draw_cameras(path: Path, frame: Frame, pred: Detections, gt: Detections | None, columns: int = 3) -> Path:
    """The frame's images in a grid, each with the boxes drawn whose edges lie in front of that camera."""
    import cv2

    tiles = []
    for img, cal in zip(frame.images, frame.calibrations):
        canvas = np.ascontiguousarray(img[:, :, ::-1]).copy()  # BGR for OpenCV
        thick = max(1, round(img.shape[0] / 300))
        for det, is_gt in ((gt, True), (pred, False)):
            if det is None or not len(det):
                continue
            uv, front = _project(box_corners(det.boxes), cal.K, cal.cam_to_ego)
            for i, name in enumerate(det.names):
                rgb = GT_COLOR if is_gt else CLASS_COLORS.get(name, OTHER_COLOR)
                bgr = tuple(int(255 * v) for v in rgb[::-1])
                for a, b in EDGES:
                    if front[i, a] and front[i, b]:
                        p, q = uv[i, a], uv[i, b]
                        if np.all(np.abs(np.concatenate([p, q])) < 1e5):
                            cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), bgr, thick, cv2.LINE_AA)
        cv2.putText(canvas, cal.name, (5, 5 + 12 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (255, 255, 255), thick)
        tiles.append(canvas)
    h, w = tiles[0].shape[:2]
    tiles = [cv2.resize(t, (w, h)) if t.shape[:2] != (h, w) else t for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), np.concatenate(rows, axis=0)):
        raise OSError(f"could not write {path}")
    return _replace(tmp, path)
