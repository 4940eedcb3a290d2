"""nuScenes (and nuScenes-format synthetic) sample infos, built once through the devkit and cached.

`build_infos(dataroot, version, split)` walks the devkit database once and returns one `SampleInfo` per
key frame of the split: camera images with intrinsics and camera-to-ego transforms, the LiDAR key frame
and its sweeps, and the ground-truth boxes in the key frame's ego frame. The result is cached
(training.data.info_cache: an `.npz` of plain arrays keyed by version, split and sweep count) and rebuilt
when the tables, the splits file or the cache format change. Range and point-count filters are applied
after the cache. The LiDAR points themselves are read by training.data.lidar.

Frames: ego = the vehicle frame of the LIDAR_TOP key frame (x forward, y left, z up). `cam_to_ego` maps
a camera's optical frame to that ego frame and includes the ego motion between the camera's and the
LiDAR's timestamps (BEVFusion's camera2lidar convention). Boxes are (x, y, z_centre, length, width,
height, yaw, vx, vy); nuScenes stores sizes as (width, length, height).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.config import NUSCENES_CAMERAS
from training.data import info_cache

if TYPE_CHECKING:
    from nuscenes import NuScenes

TABLES: tuple[str, ...] = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                           "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")
KNOWN_VERSIONS: tuple[str, ...] = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
MAX_SWEEPS = 10
DEFAULT_BOX_RANGE: tuple[float, float, float, float] = (-54.0, -54.0, 54.0, 54.0)


@dataclass(frozen=True)
class CameraInfo:
    """One camera of a sample: absolute image path, K (3x3), cam_to_ego (4x4, optical -> key ego)."""

    name: str
    image_path: Path
    K: np.ndarray
    cam_to_ego: np.ndarray


@dataclass(frozen=True)
class SweepInfo:
    """One earlier LiDAR sweep: path, sweep_to_lidar (4x4, sweep sensor -> key-frame LiDAR sensor),
    time_lag (seconds, key timestamp minus sweep timestamp, >= 0)."""

    path: Path
    sweep_to_lidar: np.ndarray
    time_lag: float


@dataclass(frozen=True)
class SampleInfo:
    """One key frame. gt_boxes: M x 9 float64 in the key ego frame; gt_names: M detection class names;
    gt_num_lidar_pts / gt_num_radar_pts: M int64. timestamp in microseconds."""

    token: str
    scene_name: str
    timestamp: int
    cameras: tuple[CameraInfo, ...]
    lidar_path: Path
    lidar_to_ego: np.ndarray
    ego_to_global: np.ndarray
    sweeps: tuple[SweepInfo, ...]
    gt_boxes: np.ndarray
    gt_names: tuple[str, ...]
    gt_num_lidar_pts: np.ndarray
    gt_num_radar_pts: np.ndarray

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)


def _transform(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    from pyquaternion import Quaternion

    T = np.eye(4)
    T[:3, :3] = Quaternion(rotation_wxyz).rotation_matrix
    T[:3, 3] = translation
    return T


# ----------------------------------------------------------------------------------------------------
# dataroot checks and splits

def check_dataroot(dataroot: str | os.PathLike[str], version: str) -> Path:
    """Check that `dataroot/version` holds every devkit table; errors name the missing path.
    Returns the table folder."""
    root = Path(dataroot)
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot {root} does not exist or is not a folder")
    table_root = root / version
    if not table_root.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        hint = f"; versions present: {', '.join(present)}" if present else ""
        if version not in KNOWN_VERSIONS and not present:
            hint = f"; known versions: {', '.join(KNOWN_VERSIONS)}"
        raise ValueError(f"unknown nuScenes version {version!r}: no table folder {table_root}{hint}")
    missing = [t for t in TABLES if not (table_root / f"{t}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"nuScenes tables missing in {table_root}: "
                                + ", ".join(f"{t}.json" for t in missing))
    return table_root


def splits_file(dataroot: str | os.PathLike[str], version: str) -> Path | None:
    """The custom splits file (DIR/splits.json, or DIR/<version>/splits.json as the devkit reads it)."""
    for p in (Path(dataroot) / "splits.json", Path(dataroot) / version / "splits.json"):
        if p.is_file():
            return p
    return None


def _read_splits(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"splits file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"splits file {path}: expected a mapping of split name -> list of scene names")
    return data


def devkit_split_name(version: str, split: str) -> str:
    """Map a split name to the devkit's predefined name for `version` ('val' on v1.0-mini is 'mini_val')."""
    if version.endswith("mini") and split in ("train", "val"):
        return f"mini_{split}"
    return split


def split_scene_names(dataroot: str | os.PathLike[str], version: str, split: str) -> list[str]:
    """Scene names of `split`: from the custom splits.json if present (synthetic data), else the
    devkit's predefined splits, checked against the version."""
    custom = splits_file(dataroot, version)
    if custom is not None:
        data = _read_splits(custom)
        if split not in data:
            raise ValueError(f"split {split!r} not in {custom} (has {', '.join(data)})")
        return [str(s) for s in data[split]]
    from nuscenes.utils.splits import create_splits_scenes

    name = devkit_split_name(version, split)
    scenes = create_splits_scenes()
    if name not in scenes:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(scenes)}")
    compatible = {"mini_train": "mini", "mini_val": "mini", "test": "test"}.get(name, "trainval")
    if not version.endswith(compatible):
        raise ValueError(f"split {split!r} does not belong to nuScenes version {version!r}")
    return list(scenes[name])


def load_nuscenes(dataroot: str | os.PathLike[str], version: str) -> NuScenes:
    """A devkit NuScenes instance, after checking the tables; malformed tables name the file."""
    from nuscenes import NuScenes

    table_root = check_dataroot(dataroot, version)
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except json.JSONDecodeError as e:
        raise ValueError(f"a nuScenes table in {table_root} is not valid JSON: {e}") from e
    except (KeyError, AssertionError, TypeError) as e:
        raise ValueError(f"nuScenes tables in {table_root} are inconsistent: {type(e).__name__}: {e}") from e


def split_samples(nusc: NuScenes, scene_names: Sequence[str], strict: bool = True) -> list[tuple[str, str]]:
    """(sample token, scene name) of every key frame of the named scenes, scene by scene in time order.
    strict: a named scene absent from the database is an error (else it is skipped, as the devkit's
    load_gt does for predefined splits)."""
    by_name = {s["name"]: s for s in nusc.scene}
    missing = [n for n in scene_names if n not in by_name]
    scene_names = [n for n in scene_names if n in by_name]
    if missing and strict:
        raise ValueError(f"split names scenes not in the database: {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    out: list[tuple[str, str]] = []
    for name in scene_names:
        token = by_name[name]["first_sample_token"]
        while token:
            out.append((token, name))
            token = nusc.get("sample", token)["next"]
    return out


# ----------------------------------------------------------------------------------------------------
# building infos from the devkit

def _sample_record(nusc: NuScenes, token: str, scene_name: str, max_sweeps: int) -> dict[str, Any]:
    from nuscenes.eval.detection.utils import category_to_detection_name
    from pyquaternion import Quaternion

    sample = nusc.get("sample", token)
    if "LIDAR_TOP" not in sample["data"]:
        raise ValueError(f"sample {token}: no LIDAR_TOP key frame")
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    lidar_to_ego = _transform(lidar_cs["translation"], lidar_cs["rotation"])
    ego_to_global = _transform(pose["translation"], pose["rotation"])
    global_to_ego = np.linalg.inv(ego_to_global)
    lidar_to_global = ego_to_global @ lidar_to_ego

    def sensor_to_key(sd: dict[str, Any]) -> np.ndarray:
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        p = nusc.get("ego_pose", sd["ego_pose_token"])
        return _transform(p["translation"], p["rotation"]) @ _transform(cs["translation"], cs["rotation"])

    cam_paths, Ks, cam_to_ego = [], [], []
    for cam in NUSCENES_CAMERAS:
        if cam not in sample["data"]:
            raise ValueError(f"sample {token}: camera {cam} missing")
        sd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"sample {token} camera {cam}: camera_intrinsic is not 3x3")
        cam_paths.append(sd["filename"])
        Ks.append(K)
        cam_to_ego.append(global_to_ego @ sensor_to_key(sd))

    sweep_paths, sweep_T, sweep_dt = [], [], []
    key_to_lidar = np.linalg.inv(lidar_to_global)
    sd = lidar_sd
    while len(sweep_paths) < max_sweeps and sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
        sweep_paths.append(sd["filename"])
        sweep_T.append(key_to_lidar @ sensor_to_key(sd))
        sweep_dt.append((lidar_sd["timestamp"] - sd["timestamp"]) * 1e-6)

    q_inv = Quaternion(pose["rotation"]).inverse
    R_inv = global_to_ego[:3, :3]
    boxes, names, n_lidar, n_radar = [], [], [], []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        name = category_to_detection_name(ann["category_name"])
        if name is None:
            continue
        centre = global_to_ego[:3, :3] @ np.asarray(ann["translation"]) + global_to_ego[:3, 3]
        yaw = (q_inv * Quaternion(ann["rotation"])).yaw_pitch_roll[0]
        w, l, h = ann["size"]
        vel = np.nan_to_num(nusc.box_velocity(ann_token), nan=0.0)
        vel_ego = R_inv @ vel
        boxes.append([*centre, l, w, h, yaw, vel_ego[0], vel_ego[1]])
        names.append(name)
        n_lidar.append(int(ann["num_lidar_pts"]))
        n_radar.append(int(ann["num_radar_pts"]))
    return {
        "token": token, "scene": scene_name, "timestamp": int(sample["timestamp"]),
        "cam_paths": cam_paths, "K": Ks, "cam_to_ego": cam_to_ego,
        "lidar_path": lidar_sd["filename"], "lidar_to_ego": lidar_to_ego, "ego_to_global": ego_to_global,
        "sweep_paths": sweep_paths, "sweep_T": sweep_T, "sweep_dt": sweep_dt,
        "boxes": boxes, "names": names, "n_lidar": n_lidar, "n_radar": n_radar,
    }


def _records_to_arrays(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    n = len(records)
    n_cam = len(NUSCENES_CAMERAS)

    def offsets(key: str) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(r[key]) for r in records])]).astype(np.int64)

    def cat(key: str, shape: tuple[int, ...]) -> np.ndarray:
        rows = [np.asarray(x, dtype=np.float64).reshape(shape) for r in records for x in r[key]]
        return np.stack(rows) if rows else np.zeros((0, *shape))

    def strs(values: list[str]) -> np.ndarray:
        return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="<U1")

    return {
        "token": strs([r["token"] for r in records]),
        "scene": strs([r["scene"] for r in records]),
        "timestamp": np.asarray([r["timestamp"] for r in records], dtype=np.int64),
        "cam_paths": strs([p for r in records for p in r["cam_paths"]]).reshape(n, n_cam),
        "K": cat("K", (3, 3)).reshape(n, n_cam, 3, 3),
        "cam_to_ego": cat("cam_to_ego", (4, 4)).reshape(n, n_cam, 4, 4),
        "lidar_path": strs([r["lidar_path"] for r in records]),
        "lidar_to_ego": np.asarray([r["lidar_to_ego"] for r in records], dtype=np.float64).reshape(n, 4, 4),
        "ego_to_global": np.asarray([r["ego_to_global"] for r in records], dtype=np.float64).reshape(n, 4, 4),
        "sweep_offsets": offsets("sweep_paths"),
        "sweep_paths": strs([p for r in records for p in r["sweep_paths"]]),
        "sweep_T": cat("sweep_T", (4, 4)),
        "sweep_dt": np.asarray([d for r in records for d in r["sweep_dt"]], dtype=np.float64),
        "box_offsets": offsets("boxes"),
        "boxes": cat("boxes", (9,)),
        "names": strs([x for r in records for x in r["names"]]),
        "n_lidar": np.asarray([x for r in records for x in r["n_lidar"]], dtype=np.int64),
        "n_radar": np.asarray([x for r in records for x in r["n_radar"]], dtype=np.int64),
    }


def _arrays_to_infos(a: dict[str, np.ndarray], dataroot: Path, max_sweeps: int) -> list[SampleInfo]:
    infos: list[SampleInfo] = []
    so, bo = a["sweep_offsets"], a["box_offsets"]
    for i in range(len(a["token"])):
        cams = tuple(CameraInfo(name, dataroot / str(a["cam_paths"][i, c]), a["K"][i, c].copy(),
                                a["cam_to_ego"][i, c].copy()) for c, name in enumerate(NUSCENES_CAMERAS))
        s0, s1 = int(so[i]), min(int(so[i + 1]), int(so[i]) + max_sweeps)
        sweeps = tuple(SweepInfo(dataroot / str(a["sweep_paths"][j]), a["sweep_T"][j].copy(), float(a["sweep_dt"][j]))
                       for j in range(s0, s1))
        b0, b1 = int(bo[i]), int(bo[i + 1])
        infos.append(SampleInfo(
            token=str(a["token"][i]), scene_name=str(a["scene"][i]), timestamp=int(a["timestamp"][i]),
            cameras=cams, lidar_path=dataroot / str(a["lidar_path"][i]), lidar_to_ego=a["lidar_to_ego"][i].copy(),
            ego_to_global=a["ego_to_global"][i].copy(), sweeps=sweeps,
            gt_boxes=a["boxes"][b0:b1].copy(), gt_names=tuple(str(x) for x in a["names"][b0:b1]),
            gt_num_lidar_pts=a["n_lidar"][b0:b1].copy(), gt_num_radar_pts=a["n_radar"][b0:b1].copy()))
    return infos


# ----------------------------------------------------------------------------------------------------
# public API

def filter_infos(infos: Sequence[SampleInfo], box_range: Sequence[float] | None = DEFAULT_BOX_RANGE,
                 min_lidar_pts: int = 1, class_names: Sequence[str] = CLASS_NAMES) -> list[SampleInfo]:
    """Keep boxes whose class is in class_names, whose BEV centre lies in box_range (xmin, ymin, xmax,
    ymax) and that hold at least min_lidar_pts LiDAR points."""
    out = []
    for info in infos:
        keep = np.asarray([n in class_names for n in info.gt_names], dtype=bool)
        keep &= info.gt_num_lidar_pts >= min_lidar_pts
        if box_range is not None:
            x, y = info.gt_boxes[:, 0], info.gt_boxes[:, 1]
            keep &= (x >= box_range[0]) & (y >= box_range[1]) & (x <= box_range[2]) & (y <= box_range[3])
        idx = np.flatnonzero(keep)
        out.append(SampleInfo(
            token=info.token, scene_name=info.scene_name, timestamp=info.timestamp, cameras=info.cameras,
            lidar_path=info.lidar_path, lidar_to_ego=info.lidar_to_ego, ego_to_global=info.ego_to_global,
            sweeps=info.sweeps, gt_boxes=info.gt_boxes[idx], gt_names=tuple(info.gt_names[i] for i in idx),
            gt_num_lidar_pts=info.gt_num_lidar_pts[idx], gt_num_radar_pts=info.gt_num_radar_pts[idx]))
    return out


def build_infos(
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    max_sweeps: int = 9,
    box_range: Sequence[float] | None = DEFAULT_BOX_RANGE,
    min_lidar_pts: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> list[SampleInfo]:
    """Sample infos of `split`, from the cache when it is current, else through the devkit (then cached).

    max_sweeps: LiDAR sweeps kept per sample (<= 10). box_range (xmin, ymin, xmax, ymax) and
    min_lidar_pts filter the boxes (None / 0 keep all detection-class boxes).
    """
    if not 0 <= max_sweeps <= MAX_SWEEPS:
        raise ValueError(f"max_sweeps must be in [0, {MAX_SWEEPS}], got {max_sweeps}")
    root = Path(dataroot)
    check_dataroot(root, version)
    scene_names = split_scene_names(root, version, split)
    custom = splits_file(root, version)
    fingerprint = info_cache.fingerprint([version, split, MAX_SWEEPS, list(NUSCENES_CAMERAS)],
                                         [root / version / f"{t}.json" for t in TABLES],
                                         [] if custom is None else [custom])
    path = info_cache.cache_path(root, version, split, MAX_SWEEPS, cache_dir)
    arrays = info_cache.load(path, fingerprint) if use_cache else None
    if arrays is None:
        nusc = load_nuscenes(root, version)
        records = [_sample_record(nusc, t, name, MAX_SWEEPS) for t, name in
                   split_samples(nusc, scene_names, strict=custom is not None)]
        arrays = _records_to_arrays(records)
        arrays["fingerprint"] = np.asarray(fingerprint)
        if use_cache:
            info_cache.save(path, arrays)
    infos = _arrays_to_infos(arrays, root, max_sweeps)
    if box_range is None and min_lidar_pts <= 0:
        return infos
    return filter_infos(infos, box_range, min_lidar_pts)
