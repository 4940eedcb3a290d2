"""LiDAR points of a sample: nuScenes .pcd.bin files, the key frame and its sweeps in the key ego frame."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.data.nuscenes import SampleInfo


def read_lidar_file(path: Path) -> np.ndarray:
    """P x 4 (x, y, z, intensity) float32 from a nuScenes .pcd.bin (5 float32 per point)."""
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise FileNotFoundError(f"cannot read LiDAR file {path}: {e.strerror}") from e
    if raw.size % 5:
        raise ValueError(f"LiDAR file {path}: size is not a multiple of 5 float32")
    return raw.reshape(-1, 5)[:, :4]


def load_points(info: SampleInfo, max_sweeps: int | None = None, remove_close: float = 1.0) -> np.ndarray:
    """Key frame + sweeps as P x 5 float32 (x, y, z, intensity, dt) in the key-frame ego frame; dt is the
    sweep's time lag in seconds (0 for the key frame). Sweep points within remove_close metres of their
    sensor (the ego vehicle's own returns) are dropped."""
    clouds = []
    key = read_lidar_file(info.lidar_path).astype(np.float64)
    clouds.append(np.concatenate([key, np.zeros((len(key), 1))], axis=1))
    sweeps = info.sweeps if max_sweeps is None else info.sweeps[:max_sweeps]
    for sw in sweeps:
        pts = read_lidar_file(sw.path).astype(np.float64)
        if remove_close > 0:
            pts = pts[np.hypot(pts[:, 0], pts[:, 1]) >= remove_close]
        pts[:, :3] = pts[:, :3] @ sw.sweep_to_lidar[:3, :3].T + sw.sweep_to_lidar[:3, 3]
        clouds.append(np.concatenate([pts, np.full((len(pts), 1), sw.time_lag)], axis=1))
    out = np.concatenate(clouds, axis=0)
    out[:, :3] = out[:, :3] @ info.lidar_to_ego[:3, :3].T + info.lidar_to_ego[:3, 3]
    return out.astype(np.float32)
