"""A hand-made, tiny nuScenes-format dataroot for the data and evaluation tests, and a check that the
devkit loads it. Also used by test_data_nuscenes.py, test_data_dataset.py and test_evaluate.py.

The world: the ego drives along a yawed line at 5 m/s; one object of each of the 10 detection classes
(plus a second car, a non-detection animal and a car with no LiDAR points; the car, pedestrian and
motorcycle move) sits around it. LiDAR files hold points inside each box (so num_lidar_pts is real) plus ground points.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
CAM_YAW_DEG = (0.0, -55.0, -110.0, 180.0, 110.0, 55.0)
IMAGE_HW = (90, 160)
K = [[100.0, 0.0, 80.0], [0.0, 100.0, 45.0], [0.0, 0.0, 1.0]]
R_OPT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical -> ego-aligned

# (category, attribute, offset from the ego start (x, y, z), size (w, l, h), yaw, velocity (vx, vy), n_points)
OBJECTS = (
    ("vehicle.car", "vehicle.moving", (12.0, 3.0, 0.8), (1.9, 4.5, 1.6), 0.3, (4.0, 1.0), 30),
    ("vehicle.car", "vehicle.parked", (-10.0, -6.0, 0.8), (1.8, 4.2, 1.5), 1.2, (0.0, 0.0), 20),
    ("human.pedestrian.adult", "pedestrian.moving", (6.0, -4.0, 0.9), (0.6, 0.7, 1.7), -0.5, (0.0, 1.2), 10),
    ("movable_object.barrier", "", (15.0, -8.0, 0.5), (2.0, 0.4, 1.0), 0.1, (0.0, 0.0), 8),
    ("vehicle.truck", "vehicle.parked", (-20.0, 10.0, 1.5), (2.5, 8.0, 3.0), -1.0, (0.0, 0.0), 40),
    ("vehicle.bicycle", "cycle.without_rider", (3.0, 9.0, 0.5), (0.6, 1.7, 1.1), 2.0, (0.0, 0.0), 6),
    ("animal", "", (20.0, 2.0, 0.3), (0.5, 1.0, 0.6), 0.0, (0.0, 0.0), 5),
    ("vehicle.bus.rigid", "vehicle.stopped", (-5.0, 16.0, 1.7), (2.9, 11.0, 3.4), 0.2, (0.0, 0.0), 50),
    ("vehicle.trailer", "vehicle.parked", (25.0, 10.0, 1.9), (2.5, 10.0, 3.8), -0.3, (0.0, 0.0), 25),
    ("vehicle.construction", "vehicle.parked", (-25.0, -10.0, 1.6), (2.8, 6.5, 3.2), 0.7, (0.0, 0.0), 15),
    ("vehicle.motorcycle", "cycle.with_rider", (-4.0, -12.0, 0.7), (0.8, 2.1, 1.4), 1.5, (3.0, -2.0), 9),
    ("movable_object.trafficcone", "", (8.0, 6.0, 0.4), (0.4, 0.4, 0.8), 0.0, (0.0, 0.0), 4),
    ("vehicle.car", "vehicle.parked", (30.0, -15.0, 0.8), (1.8, 4.4, 1.5), 0.0, (0.0, 0.0), 0),
)


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _q(R: np.ndarray) -> list[float]:
    return list(Quaternion(matrix=R, atol=1e-7).elements)


def _T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def write_mini_dataroot(root: Path, version: str = "v1.0-trainval", scenes: tuple[str, ...] = ("scene-a", "scene-b"),
                        samples_per_scene: int = 3, splits: dict | None = None, seed: int = 0) -> Path:
    """Write the dataroot; `splits` (e.g. {"train": [...], "val": [...]}) goes to root/splits.json."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    tables: dict[str, list] = {t: [] for t in ("category", "attribute", "visibility", "instance", "sensor",
                                               "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                               "sample_data", "sample_annotation", "map")}
    counter = iter(range(10**9))

    def tok(prefix: str) -> str:
        return f"{prefix}{next(counter):08d}"

    cats = {}
    for name in sorted({o[0] for o in OBJECTS} | {"static_object.bicycle_rack"}):
        cats[name] = tok("cat")
        tables["category"].append({"token": cats[name], "name": name, "description": ""})
    attrs = {}
    for name in ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "cycle.without_rider",
                 "cycle.with_rider"):
        attrs[name] = tok("att")
        tables["attribute"].append({"token": attrs[name], "name": name, "description": ""})
    tables["visibility"].append({"token": "4", "level": "v80-100", "description": ""})
    sensors = {}
    for ch in ("LIDAR_TOP", *CAMERAS):
        sensors[ch] = tok("sen")
        tables["sensor"].append({"token": sensors[ch], "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
    calib = {}
    lidar_R = _rot_z(-math.pi / 2)
    calib["LIDAR_TOP"] = (lidar_R, np.array([0.9, 0.0, 1.8]))
    for ch, yaw in zip(CAMERAS, CAM_YAW_DEG):
        calib[ch] = (_rot_z(math.radians(yaw)) @ R_OPT, np.array([1.0 * math.cos(math.radians(yaw)), 0.5 * math.sin(math.radians(yaw)), 1.5]))
    cs_tok = {}
    for ch, (R, t) in calib.items():
        cs_tok[ch] = tok("cs")
        tables["calibrated_sensor"].append({"token": cs_tok[ch], "sensor_token": sensors[ch], "translation": list(t),
                                            "rotation": _q(R), "camera_intrinsic": K if ch != "LIDAR_TOP" else []})
    for d in ("maps", "samples/LIDAR_TOP", "sweeps/LIDAR_TOP", *(f"samples/{c}" for c in CAMERAS)):
        (root / d).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "maps" / "mini.png"), np.zeros((4, 4), np.uint8))
    map_rec = {"token": tok("map"), "log_tokens": [], "category": "semantic_prior", "filename": "maps/mini.png"}
    tables["map"].append(map_rec)
    image = np.full((*IMAGE_HW, 3), 127, np.uint8)

    for si, scene_name in enumerate(scenes):
        log = {"token": tok("log"), "logfile": scene_name, "vehicle": "v", "date_captured": "2026-01-01",
               "location": "singapore-onenorth"}
        tables["log"].append(log)
        map_rec["log_tokens"].append(log["token"])
        t0 = 1_600_000_000_000_000 + si * 100_000_000
        ego0 = np.array([100.0 * si + 300.0, 50.0, 0.0])
        ego_yaw0 = 0.4 + 0.3 * si
        heading = np.array([math.cos(ego_yaw0), math.sin(ego_yaw0), 0.0])

        def ego_at(ts: int) -> np.ndarray:
            dt = (ts - t0) * 1e-6
            return _T(_rot_z(ego_yaw0 + 0.05 * dt), ego0 + 5.0 * dt * heading)

        def obj_global(k: int, ts: int) -> tuple[np.ndarray, float]:
            _, _, off, _, yaw, vel, _ = OBJECTS[k]
            dt = (ts - t0) * 1e-6
            centre = ego0 + _rot_z(ego_yaw0) @ np.asarray(off) + _rot_z(ego_yaw0) @ np.array([*vel, 0.0]) * dt
            return centre, ego_yaw0 + yaw

        def ego_pose(ts: int) -> str:
            T = ego_at(ts)
            rec = {"token": tok("ep"), "timestamp": ts, "rotation": _q(T[:3, :3]), "translation": list(T[:3, 3])}
            tables["ego_pose"].append(rec)
            return rec["token"]

        def lidar_points(ts: int) -> np.ndarray:
            """Points in the LIDAR_TOP frame at time ts: ground plus n_points inside each object."""
            world_to_lidar = np.linalg.inv(ego_at(ts) @ _T(*calib["LIDAR_TOP"]))
            pts = [np.column_stack([rng.uniform(-30, 30, 200), rng.uniform(-30, 30, 200), np.full(200, -1.95)])]
            for k, (_, _, _, size, _, _, n) in enumerate(OBJECTS):
                if n == 0:
                    continue
                centre, yaw = obj_global(k, ts)
                w, l, h = size
                local = rng.uniform(-0.4, 0.4, (n, 3)) * np.array([l, w, h])
                world = local @ _rot_z(yaw).T + centre
                pts.append(world @ world_to_lidar[:3, :3].T + world_to_lidar[:3, 3])
            xyz = np.concatenate(pts)
            out = np.zeros((len(xyz), 5), np.float32)
            out[:, :3] = xyz
            out[:, 3] = rng.uniform(0, 100, len(xyz))
            return out

        sample_tokens = [tok("smp") for _ in range(samples_per_scene)]
        scene = {"token": tok("scn"), "log_token": log["token"], "nbr_samples": samples_per_scene,
                 "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                 "name": scene_name, "description": ""}
        tables["scene"].append(scene)
        prev_sd: dict[str, dict] = {}
        instances = [{"token": tok("ins"), "category_token": cats[o[0]], "nbr_annotations": samples_per_scene,
                      "first_annotation_token": "", "last_annotation_token": ""} for o in OBJECTS]
        tables["instance"].extend(instances)
        prev_ann: list[dict | None] = [None] * len(OBJECTS)
        for j, stok in enumerate(sample_tokens):
            ts = t0 + j * 500_000
            tables["sample"].append({"token": stok, "timestamp": ts, "scene_token": scene["token"],
                                     "prev": sample_tokens[j - 1] if j else "",
                                     "next": sample_tokens[j + 1] if j + 1 < samples_per_scene else ""})
            frames = []
            if j:  # one non-key sweep between key frames
                frames.append(("LIDAR_TOP", ts - 250_000, False))
            frames.append(("LIDAR_TOP", ts, True))
            frames += [(ch, ts + 8_000 * (c + 1), True) for c, ch in enumerate(CAMERAS)]
            for ch, fts, key in frames:
                is_lidar = ch == "LIDAR_TOP"
                folder = "samples" if key else "sweeps"
                fname = f"{folder}/{ch}/{scene_name}__{ch}__{fts}.{'pcd.bin' if is_lidar else 'jpg'}"
                if is_lidar:
                    lidar_points(fts).tofile(root / fname)
                else:
                    cv2.imwrite(str(root / fname), image)
                rec = {"token": tok("sd"), "sample_token": stok, "ego_pose_token": ego_pose(fts),
                       "calibrated_sensor_token": cs_tok[ch], "timestamp": fts,
                       "fileformat": "pcd" if is_lidar else "jpg", "is_key_frame": key,
                       "height": 0 if is_lidar else IMAGE_HW[0], "width": 0 if is_lidar else IMAGE_HW[1],
                       "filename": fname, "prev": "", "next": ""}
                if ch in prev_sd:
                    rec["prev"] = prev_sd[ch]["token"]
                    prev_sd[ch]["next"] = rec["token"]
                prev_sd[ch] = rec
                tables["sample_data"].append(rec)
            for k, obj in enumerate(OBJECTS):
                centre, yaw = obj_global(k, ts)
                ann = {"token": tok("ann"), "sample_token": stok, "instance_token": instances[k]["token"],
                       "visibility_token": "4", "attribute_tokens": [attrs[obj[1]]] if obj[1] else [],
                       "translation": list(centre), "size": list(obj[3]), "rotation": _q(_rot_z(yaw)),
                       "prev": "", "next": "", "num_lidar_pts": obj[6], "num_radar_pts": 0}
                if prev_ann[k] is not None:
                    ann["prev"] = prev_ann[k]["token"]
                    prev_ann[k]["next"] = ann["token"]
                else:
                    instances[k]["first_annotation_token"] = ann["token"]
                instances[k]["last_annotation_token"] = ann["token"]
                prev_ann[k] = ann
                tables["sample_annotation"].append(ann)

    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_minidb_loads_in_devkit(tmp_path: Path) -> None:
    from nuscenes import NuScenes

    root = write_mini_dataroot(tmp_path / "db", splits={"train": ["scene-a"], "val": ["scene-b"]})
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(root), verbose=False)
    assert len(nusc.sample) == 6
    sample = nusc.sample[1]
    assert set(sample["data"]) == {"LIDAR_TOP", *CAMERAS}
    assert len(sample["anns"]) == len(OBJECTS)
    v = nusc.box_velocity(sample["anns"][0])
    assert np.all(np.isfinite(v)) and np.linalg.norm(v[:2]) > 3.0
