"""The nuScenes v1.0 tables of a synthetic dataset, and where its files live.

Record layouts follow the nuScenes schema (https://www.nuscenes.org/nuscenes#data-format). Tokens
are 32 hex digits hashed from the seed and the record's identity, so a seed gives the same tokens.
Scene names are taken from the devkit's own train/val split lists (`create_splits_scenes`), so the
devkit split and our splits.json agree; splits.json holds the same names.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from training.data.synth import rig
from training.data.synth.world import ANNOTATION_RANGE, CHILD_CATEGORY, CLASS_SPECS, SceneWorld, Timeline

VERSIONS: dict[str, tuple[str, str]] = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val")}
ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
    "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
LOCATION = "boston-seaport"
MIN_VISIBLE_PIXELS = 80  # at 1600 x 900 (see min_visible_pixels)


def token(seed: int, *key: object) -> str:
    """Deterministic 32-hex-digit token of a record."""
    return hashlib.md5(":".join(str(k) for k in (seed, *key)).encode()).hexdigest()


def log_name(seed: int, scene: int) -> str:
    return f"n000-synth-s{seed}-{scene:04d}"


def data_path(seed: int, scene: int, channel: str, timestamp: int, key_frame: bool) -> str:
    """Path of a sample_data file relative to the dataroot, nuScenes style."""
    ext = "pcd.bin" if channel == rig.LIDAR_CHANNEL else "jpg"
    folder = "samples" if key_frame else "sweeps"
    return f"{folder}/{channel}/{log_name(seed, scene)}__{channel}__{timestamp}.{ext}"


def split_scene_names(version: str, scenes: int) -> tuple[list[str], list[str]]:
    """(train names, val names): the last ~20% of scenes (at least one when there are two or more)
    are val; names come from the devkit's split lists for this version."""
    from nuscenes.utils.splits import create_splits_scenes

    if version not in VERSIONS:
        raise ValueError(f"version {version!r} not supported; choose from {', '.join(VERSIONS)}")
    splits = create_splits_scenes()
    train_key, val_key = VERSIONS[version]
    n_val = 0 if scenes < 2 else max(1, round(0.2 * scenes))
    n_train = scenes - n_val
    if n_train > len(splits[train_key]) or n_val > len(splits[val_key]):
        raise ValueError(f"{version} has room for {len(splits[train_key])} train and {len(splits[val_key])} val "
                         f"scenes; {scenes} scenes need {n_train} and {n_val}")
    return sorted(splits[train_key])[:n_train], sorted(splits[val_key])[:n_val]


def visibility_token(visible: int, silhouette: int) -> str:
    frac = visible / silhouette if silhouette > 0 else 0.0
    return "1" if frac < 0.4 else "2" if frac < 0.6 else "3" if frac < 0.8 else "4"


@dataclass
class SampleStats:
    """What rendering one key frame tells the tables: per object, camera silhouette and visible pixel
    counts summed over the six cameras, and key-frame LiDAR points inside its annotation box."""

    scene: int
    key: int
    silhouette: np.ndarray
    visible: np.ndarray
    lidar_points: np.ndarray


def candidates(world: SceneWorld, t: float) -> np.ndarray:
    """Indices of the objects that may be annotated at scene time t: of a detection class, centre
    within ANNOTATION_RANGE of the ego. Which of them are is decided by what the sensors saw (`observed`)."""
    centre, _, _ = world.object_state(t)
    ego, _ = world.ego_pose(t)
    near = np.linalg.norm(centre[:, :2] - ego[:2], axis=1) <= ANNOTATION_RANGE
    return np.nonzero(near & world.annotatable)[0]


def min_visible_pixels(image_size: tuple[int, int]) -> int:
    """Camera pixels an object must show (summed over the cameras) to be annotated without LiDAR
    points: MIN_VISIBLE_PIXELS at 1600 x 900, scaled with the image area, at least 1."""
    return max(1, round(MIN_VISIBLE_PIXELS * image_size[0] * image_size[1] / (rig.FULL_SIZE[0] * rig.FULL_SIZE[1])))


def observed(stats: SampleStats, image_size: tuple[int, int]) -> np.ndarray:
    """(n,) bool: objects the sensors saw in this key frame: at least one key-frame LiDAR point in the
    box, or enough visible camera pixels."""
    return (stats.lidar_points > 0) | (stats.visible >= min_visible_pixels(image_size))


def annotation_mask(world: SceneWorld, tl: Timeline, stats: dict[tuple[int, int], SampleStats], scene: int,
                    image_size: tuple[int, int]) -> np.ndarray:
    """(key frames, n) bool: which candidates are annotated in which key frame, as nuScenes annotators
    label tracks: wherever the object is seen, and through occlusions between its first and last
    sighting in the scene. Objects hidden from both sensors for a whole scene are not annotated."""
    keys = len(tl.keys)
    cand = np.zeros((keys, world.num_objects), dtype=bool)
    seen = np.zeros_like(cand)
    for k, key_us in enumerate(tl.keys):
        cand[k, candidates(world, tl.seconds(key_us))] = True
        seen[k] = observed(stats[(scene, k)], image_size) & cand[k]
    before = np.maximum.accumulate(seen, axis=0)
    after = np.maximum.accumulate(seen[::-1], axis=0)[::-1]
    return cand & (seen | (before & after))


def _f(values: np.ndarray | list[float]) -> list[float]:
    return [float(v) for v in values]


def build_tables(seed: int, worlds: list[SceneWorld], timelines: list[Timeline],
                 stats: dict[tuple[int, int], SampleStats], names: list[str],
                 image_size: tuple[int, int]) -> dict[str, list[dict]]:
    """All 13 tables of the dataset."""
    tok = lambda *key: token(seed, *key)  # noqa: E731
    channels = [c.channel for c in rig.CAMERAS] + [rig.LIDAR_CHANNEL]
    categories = sorted({spec[0] for spec in CLASS_SPECS.values()} | {CHILD_CATEGORY})
    t: dict[str, list[dict]] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    t["category"] = [{"token": tok("category", c), "name": c, "description": f"synthetic {c}"} for c in categories]
    t["attribute"] = [{"token": tok("attribute", a), "name": a, "description": f"synthetic {a}"} for a in ATTRIBUTES]
    t["visibility"] = [{"token": v, "level": lvl, "description": d} for v, lvl, d in VISIBILITY]
    t["sensor"] = [{"token": tok("sensor", ch), "channel": ch, "modality": "lidar" if ch == rig.LIDAR_CHANNEL
                    else "camera"} for ch in channels]
    t["map"] = [{"token": tok("map"), "log_tokens": [tok("log", i) for i in range(len(worlds))],
                 "category": "semantic_prior", "filename": f"maps/{tok('map')}.png"}]
    h, w = image_size
    for i, (world, tl) in enumerate(zip(worlds, timelines)):
        t["log"].append({"token": tok("log", i), "logfile": log_name(seed, i), "vehicle": "n000",
                         "date_captured": "2018-08-01", "location": LOCATION})
        for cam in rig.CAMERAS:
            t["calibrated_sensor"].append({
                "token": tok("cs", i, cam.channel), "sensor_token": tok("sensor", cam.channel),
                "translation": list(cam.translation), "rotation": rig.matrix_quaternion(rig.camera_to_ego(cam)),
                "camera_intrinsic": rig.intrinsics(cam, image_size).tolist()})
        t["calibrated_sensor"].append({
            "token": tok("cs", i, rig.LIDAR_CHANNEL), "sensor_token": tok("sensor", rig.LIDAR_CHANNEL),
            "translation": list(rig.LIDAR_TRANSLATION), "rotation": rig.yaw_quaternion(rig.LIDAR_YAW),
            "camera_intrinsic": []})
        n_keys = len(tl.keys)
        samples = [tok("sample", i, k) for k in range(n_keys)]
        t["scene"].append({"token": tok("scene", i), "log_token": tok("log", i), "nbr_samples": n_keys,
                           "first_sample_token": samples[0], "last_sample_token": samples[-1], "name": names[i],
                           "description": f"synthetic drive, seed {seed}, ego {world.ego_speed:.1f} m/s, "
                                          f"curvature {world.road.curvature:.4f}"})
        for k, key_us in enumerate(tl.keys):
            t["sample"].append({"token": samples[k], "timestamp": key_us, "scene_token": tok("scene", i),
                                "prev": samples[k - 1] if k else "", "next": samples[k + 1] if k + 1 < n_keys else ""})

        def add_chain(channel: str, frames: list[tuple[int, int, bool]]) -> None:
            """frames: (timestamp, owning key frame index, is key frame) in time order."""
            toks = [tok("sd", i, channel, ts) for ts, _, _ in frames]
            for j, (ts, k, is_key) in enumerate(frames):
                ego, rot = world.ego_pose(tl.seconds(ts))
                t["ego_pose"].append({"token": toks[j], "timestamp": ts, "rotation": rig.matrix_quaternion(rot),
                                      "translation": _f(ego)})
                cam = channel != rig.LIDAR_CHANNEL
                t["sample_data"].append({
                    "token": toks[j], "sample_token": samples[k], "ego_pose_token": toks[j],
                    "calibrated_sensor_token": tok("cs", i, channel), "timestamp": ts,
                    "fileformat": "jpg" if cam else "pcd", "is_key_frame": is_key,
                    "height": h if cam else 0, "width": w if cam else 0,
                    "filename": data_path(seed, i, channel, ts, is_key),
                    "prev": toks[j - 1] if j else "", "next": toks[j + 1] if j + 1 < len(frames) else ""})

        for c, cam in enumerate(rig.CAMERAS):
            add_chain(cam.channel, [(tl.cameras[k][c], k, True) for k in range(n_keys)])
        lidar: list[tuple[int, int, bool]] = []
        for k in range(n_keys):
            lidar.append((tl.keys[k], k, True))
            lidar += [(ts, k + 1, False) for ts in tl.sweeps[k]]  # a sweep belongs to the next key frame
        add_chain(rig.LIDAR_CHANNEL, lidar)
        _annotations(t, tok, world, tl, stats, i, samples, image_size)
    return t


def _annotations(t: dict[str, list[dict]], tok: Callable[..., str], world: SceneWorld, tl: Timeline,
                 stats: dict[tuple[int, int], SampleStats], scene: int, samples: list[str],
                 image_size: tuple[int, int]) -> None:
    chains: dict[int, list[dict]] = {}
    annotate = annotation_mask(world, tl, stats, scene, image_size)
    for k, key_us in enumerate(tl.keys):
        time = tl.seconds(key_us)
        centre, yaw, _ = world.object_state(time)
        st = stats[(scene, k)]
        for o in np.flatnonzero(annotate[k]):
            o = int(o)
            attr = world.attributes[o]
            chains.setdefault(o, []).append({
                "token": tok("ann", scene, o, k), "sample_token": samples[k], "instance_token": tok("inst", scene, o),
                "visibility_token": visibility_token(int(st.visible[o]), int(st.silhouette[o])),
                "attribute_tokens": [tok("attribute", attr)] if attr else [],
                "translation": _f(centre[o]), "size": _f(world.size_wlh[o]),
                "rotation": [float(np.cos(yaw[o] / 2)), 0.0, 0.0, float(np.sin(yaw[o] / 2))],
                "prev": "", "next": "", "num_lidar_pts": int(st.lidar_points[o]), "num_radar_pts": 0})
    for o, chain in sorted(chains.items()):
        for a, b in zip(chain, chain[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        t["sample_annotation"] += chain
        t["instance"].append({"token": tok("inst", scene, o), "category_token": tok("category", world.categories[o]),
                              "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
                              "last_annotation_token": chain[-1]["token"]})


def write_tables(root: Path, version: str, tables: dict[str, list[dict]]) -> None:
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        with open(folder / f"{name}.json", "w") as f:
            json.dump(records, f, indent=0)
