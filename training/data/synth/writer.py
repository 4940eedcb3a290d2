"""Write a synthetic world as a nuScenes dataroot: render every key frame (6 cameras, LIDAR_TOP and the
LiDAR sweeps after it) in a process pool, then write the tables, a map mask and splits.json.

Everything goes into a temporary folder beside `out` that is renamed onto `out` at the end, so a
failure leaves no half-written dataset behind. Same seed, same arguments -> byte-identical files.
"""
from __future__ import annotations

import json
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import cv2
import numpy as np
from tqdm import tqdm

from training.data.synth import rig
from training.data.synth.render import render_camera, render_lidar
from training.data.synth.tables import SampleStats, build_tables, candidates, data_path, split_scene_names, write_tables
from training.data.synth.world import SceneWorld, Timeline, make_timeline, make_world
from training.fsutil import atomic_dir, check_absent

if TYPE_CHECKING:
    from nuscenes.utils.data_classes import Box

JPEG_QUALITY = 92


class _RenderState(TypedDict):
    """What every render job needs (handed to each pool process once, by _init)."""

    seed: int
    root: str
    image_size: tuple[int, int]
    worlds: list[SceneWorld]
    timelines: list[Timeline]


_STATE: _RenderState | None = None  # this process's job context (set by _init)


def _init(state: _RenderState, worker: bool = False) -> None:
    global _STATE
    cv2.setNumThreads(1)  # one render per process; no thread pools inherited across fork
    if worker:
        # a pool worker must die at once when the pool terminates it: the parent's SIGTERM handler
        # (the CLI turns SIGTERM into an exception, to clean up) would raise inside a worker that
        # holds the task queue's lock, and the other workers would wait for that lock forever
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _STATE = state


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """H x W x 3 uint8 RGB -> JPEG bytes (quality JPEG_QUALITY); RuntimeError when OpenCV fails."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding of a {rgb.shape} image failed")
    return buf.tobytes()


def lidar_rng(seed: int, scene: int, key: int, sweep: int) -> np.random.Generator:
    """The generator of one LiDAR sweep's noise (sweep 0: the key frame, j: the j-th sweep after it)."""
    return np.random.default_rng([seed, scene, key, sweep, 3])


def count_points_in_boxes(points: np.ndarray, cs: Mapping[str, Sequence[float]], pose: Mapping[str, Sequence[float]],
                          boxes: Sequence[Box]) -> np.ndarray:
    """Points (N, >=3, sensor frame) inside each nuScenes Box (global frame), transforming the points
    exactly as the devkit does (LidarPointCloud.rotate/translate on float32, then points_in_box)."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    pc = LidarPointCloud(points.T.astype(np.float32).copy()[:4])
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pose["translation"]))
    xyz = pc.points[:3]
    counts = np.zeros(len(boxes), dtype=np.int64)
    for b, box in enumerate(boxes):
        near = np.linalg.norm(xyz[:2] - box.center[:2, None], axis=0) <= np.linalg.norm(box.wlh) / 2 + 0.5
        if near.any():
            counts[b] = int(points_in_box(box, xyz[:, near]).sum())
    return counts


def _render_key(job: tuple[int, int]) -> SampleStats:
    """Render and write key frame `key` of scene `scene`; returns its per-object statistics."""
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    scene, key = job
    if _STATE is None:
        raise RuntimeError("_render_key called before _init")
    seed, root, image_size = _STATE["seed"], Path(_STATE["root"]), _STATE["image_size"]
    world = _STATE["worlds"][scene]
    tl = _STATE["timelines"][scene]
    n = world.num_objects
    silhouette, visible = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for c, cam in enumerate(rig.CAMERAS):
        ts = tl.cameras[key][c]
        frame = render_camera(world, tl.seconds(ts), cam, image_size)
        silhouette += frame.silhouette
        visible += frame.visible
        (root / data_path(seed, scene, cam.channel, ts, True)).write_bytes(encode_jpeg(frame.image))
    for j, ts in enumerate((tl.keys[key], *tl.sweeps[key])):
        points, _ = render_lidar(world, tl.seconds(ts), lidar_rng(seed, scene, key, j))
        (root / data_path(seed, scene, rig.LIDAR_CHANNEL, ts, j == 0)).write_bytes(points.tobytes())
        if j == 0:
            key_points = points
    # num_lidar_pts: key-frame points inside each candidate's box, counted the devkit's way
    time = tl.seconds(tl.keys[key])
    centre, yaw, _ = world.object_state(time)
    ego, ego_rot = world.ego_pose(time)
    objs = candidates(world, time)
    boxes = [Box(centre[o], world.size_wlh[o], Quaternion(axis=[0, 0, 1], angle=float(yaw[o]))) for o in objs]
    cs = {"rotation": rig.yaw_quaternion(rig.LIDAR_YAW), "translation": list(rig.LIDAR_TRANSLATION)}
    pose = {"rotation": rig.matrix_quaternion(ego_rot), "translation": [float(v) for v in ego]}
    lidar_points = np.zeros(n, np.int64)
    lidar_points[objs] = count_points_in_boxes(key_points, cs, pose, boxes)
    return SampleStats(scene, key, silhouette, visible, lidar_points)


def _check(out: Path, scenes: int, samples_per_scene: int, image_size: tuple[int, int], sweeps: int,
           workers: int, force: bool) -> None:
    if scenes < 1:
        raise ValueError(f"--scenes must be >= 1, got {scenes}")
    if samples_per_scene < 2:
        raise ValueError(f"--samples-per-scene must be >= 2 (velocities need two key frames), got {samples_per_scene}")
    if len(image_size) != 2 or min(image_size) < 8:
        raise ValueError(f"--image-size must be two sizes H W >= 8, got {tuple(image_size)}")
    if sweeps < 0 or sweeps > 19:
        raise ValueError(f"--sweeps must be in 0..19 (LiDAR sweeps between key frames), got {sweeps}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    check_absent(out, force, "output folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")


def generate(out: Path, scenes: int, samples_per_scene: int, seed: int, image_size: tuple[int, int] = (900, 1600),
             sweeps: int = 9, version: str = "v1.0-trainval", workers: int = 1, force: bool = False,
             progress: bool = True) -> Path:
    """Write a synthetic nuScenes dataroot at `out` and return it.

    scenes x samples_per_scene key frames at 2 Hz, `sweeps` LiDAR sweeps between consecutive key frames,
    images of image_size (H, W) with intrinsics scaled from 1600x900. `workers` processes render key
    frames in parallel. An existing `out` is an error unless `force` (then it is replaced at the end).
    """
    out = Path(out)
    image_size = (int(image_size[0]), int(image_size[1]))
    _check(out, scenes, samples_per_scene, image_size, sweeps, workers, force)
    train, val = split_scene_names(version, scenes)
    with atomic_dir(out, force) as tmp:
        duration = (samples_per_scene - 1) * 0.5
        worlds = [make_world(seed, i, duration) for i in range(scenes)]
        offsets = [c.offset_us for c in rig.CAMERAS]
        timelines = [make_timeline(seed, i, samples_per_scene, sweeps, offsets) for i in range(scenes)]
        for ch in [c.channel for c in rig.CAMERAS] + [rig.LIDAR_CHANNEL]:
            (tmp / "samples" / ch).mkdir(parents=True)
        (tmp / "sweeps" / rig.LIDAR_CHANNEL).mkdir(parents=True)
        state: _RenderState = {"seed": seed, "root": str(tmp), "image_size": image_size, "worlds": worlds,
                               "timelines": timelines}
        jobs = [(i, k) for i in range(scenes) for k in range(samples_per_scene)]
        bar = tqdm(total=len(jobs), desc="synth key frames", unit="frame", disable=not progress)
        stats: dict[tuple[int, int], SampleStats] = {}
        if workers == 1:
            _init(state)
            for job in jobs:
                stats[job] = _render_key(job)
                bar.update()
        else:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_init, initargs=(state, True)) as pool:
                for st in pool.imap_unordered(_render_key, jobs):
                    stats[(st.scene, st.key)] = st
                    bar.update()
        bar.close()
        tables = build_tables(seed, worlds, timelines, stats, train + val, image_size)
        write_tables(tmp, version, tables)
        (tmp / "maps").mkdir()
        mask = np.zeros((64, 64), np.uint8)
        mask[24:40] = 255  # a stand-in drivable-area prior: the devkit only needs the file to exist
        cv2.imwrite(str(tmp / tables["map"][0]["filename"]), mask)
        (tmp / "splits.json").write_text(json.dumps({"train": train, "val": val}, indent=1) + "\n")
    return out


__all__ = ["generate", "count_points_in_boxes", "encode_jpeg", "lidar_rng"]
