"""training.data.nuscenes: infos against the devkit, the cache, points, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyquaternion import Quaternion

from simdistill_ros.core.config import NUSCENES_CAMERAS
from training.data import info_cache
from training.data import nuscenes as nd
from training.data.lidar import load_points, read_lidar_file

import test_data_minidb as minidb
write_mini_dataroot = minidb.write_mini_dataroot
import box_helpers

SPLITS = {"train": ["scene-a"], "val": ["scene-b"]}


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mini_dataroot(tmp_path_factory.mktemp("nusc") / "db", splits=SPLITS)


def test_infos_boxes_match_devkit_get_sample_data(dataroot: Path, tmp_path: Path) -> None:
    from nuscenes import NuScenes

    infos = nd.build_infos(dataroot, "v1.0-trainval", "val", box_range=None, min_lidar_pts=0, cache_dir=tmp_path)
    assert len(infos) == 3 and {i.scene_name for i in infos} == {"scene-b"}
    nusc = NuScenes(version="v1.0-trainval", dataroot=str(dataroot), verbose=False)
    for info in infos:
        assert info.camera_names == NUSCENES_CAMERAS
        sample = nusc.get("sample", info.token)
        _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        boxes = [b for b in boxes if b.name != "animal"]  # not a detection class
        assert len(boxes) == len(info.gt_boxes) == 12
        for b, mine in zip(boxes, info.gt_boxes):
            b.rotate(Quaternion(matrix=info.lidar_to_ego[:3, :3], atol=1e-7))
            b.translate(info.lidar_to_ego[:3, 3])
            np.testing.assert_allclose(mine[:3], b.center, atol=1e-6)
            np.testing.assert_allclose(mine[[4, 3, 5]], b.wlh, atol=1e-9)  # l, w, h vs devkit w, l, h
            assert abs(np.angle(np.exp(1j * (mine[6] - b.orientation.yaw_pitch_roll[0])))) < 1e-6
            v_global = np.nan_to_num(nusc.box_velocity(b.token))
            v_ego = np.linalg.inv(info.ego_to_global)[:3, :3] @ v_global
            np.testing.assert_allclose(mine[7:9], v_ego[:2], atol=1e-6)
        # the moving car (first object) moves at ~4.1 m/s relative to the world
        assert np.hypot(*info.gt_boxes[0, 7:9]) == pytest.approx(np.hypot(4.0, 1.0), rel=1e-3)
        # cameras: K and cam_to_ego agree with the devkit's (incl. ego motion between timestamps)
        for cam in info.cameras:
            sd = nusc.get("sample_data", sample["data"][cam.name])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            np.testing.assert_allclose(cam.K, cs["camera_intrinsic"])
            assert cam.image_path == dataroot / sd["filename"] and cam.image_path.is_file()
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            p_cam = np.array([0.3, -0.2, 7.0])
            world = Quaternion(pose["rotation"]).rotate(Quaternion(cs["rotation"]).rotate(p_cam) + cs["translation"]) + pose["translation"]
            ego = np.linalg.inv(info.ego_to_global) @ np.append(world, 1.0)
            np.testing.assert_allclose(cam.cam_to_ego @ np.append(p_cam, 1.0), ego, atol=1e-6)


def test_infos_filters_and_sweeps(dataroot: Path, tmp_path: Path) -> None:
    infos = nd.build_infos(dataroot, "v1.0-trainval", "train", max_sweeps=9, cache_dir=tmp_path)
    # the zero-point car and the non-detection animal are dropped; the far truck is in range
    assert [len(i.gt_boxes) for i in infos] == [11, 11, 11]
    assert all(n > 0 for i in infos for n in i.gt_num_lidar_pts)
    near = nd.build_infos(dataroot, "v1.0-trainval", "train", box_range=(-12, -12, 12, 12), cache_dir=tmp_path)
    assert all(np.all(np.abs(i.gt_boxes[:, :2]) <= 12) for i in near) and len(near[0].gt_boxes) < 11
    # sweeps: the first sample has none; later ones reach back through the previous key frame
    assert len(infos[0].sweeps) == 0 and len(infos[2].sweeps) == 4
    assert all(0 < s.time_lag <= 1.0 for s in infos[2].sweeps)
    assert len(nd.build_infos(dataroot, "v1.0-trainval", "train", max_sweeps=1, cache_dir=tmp_path)[2].sweeps) == 1


def test_points_in_key_ego_frame(dataroot: Path, tmp_path: Path) -> None:
    points_in_boxes = box_helpers.points_in_boxes
    info = nd.build_infos(dataroot, "v1.0-trainval", "train", cache_dir=tmp_path)[2]
    pts = load_points(info)
    assert pts.dtype == np.float32 and pts.shape[1] == 5
    key = pts[pts[:, 4] == 0]
    assert len(key) == len(read_lidar_file(info.lidar_path))
    # every box with points holds exactly its num_lidar_pts key-frame points (points are strictly inside)
    inside = points_in_boxes(key[:, :3].astype(np.float64), info.gt_boxes)
    np.testing.assert_array_equal(inside.sum(0), info.gt_num_lidar_pts)
    # sweep points of static objects land in their boxes too (sweep -> key transform)
    swept = pts[pts[:, 4] > 0]
    assert len(swept) and set(np.round(np.unique(swept[:, 4]), 3)) <= {0.25, 0.5, 0.75, 1.0}
    static = [k for k in range(len(info.gt_boxes)) if np.hypot(*info.gt_boxes[k, 7:9]) < 1e-6]
    in_static = points_in_boxes(swept[:, :3].astype(np.float64), info.gt_boxes[static], margin=1e-3)
    assert in_static.sum() > 0


def test_cache_hit_and_invalidation(dataroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = nd.load_nuscenes
    monkeypatch.setattr(nd, "load_nuscenes", lambda *a: calls.append(a) or real(*a))
    first = nd.build_infos(dataroot, "v1.0-trainval", "val", cache_dir=tmp_path)
    assert len(calls) == 1 and list(tmp_path.glob("infos_v1.0-trainval_val_*.npz"))
    second = nd.build_infos(dataroot, "v1.0-trainval", "val", cache_dir=tmp_path)
    assert len(calls) == 1  # served from the cache
    for a, b in zip(first, second):
        assert a.token == b.token and a.gt_names == b.gt_names
        np.testing.assert_array_equal(a.gt_boxes, b.gt_boxes)
        np.testing.assert_array_equal(a.cameras[3].cam_to_ego, b.cameras[3].cam_to_ego)
    # a changed splits file invalidates it
    work = tmp_path / "copy"
    shutil.copytree(dataroot, work)
    nd.build_infos(work, "v1.0-trainval", "val", cache_dir=tmp_path / "c2")
    (work / "splits.json").write_text(json.dumps({"train": ["scene-b"], "val": ["scene-a"]}))
    swapped = nd.build_infos(work, "v1.0-trainval", "val", cache_dir=tmp_path / "c2")
    assert len(calls) == 3 and {i.scene_name for i in swapped} == {"scene-a"}
    # the default cache folder lives under the dataroot
    nd.build_infos(work, "v1.0-trainval", "train")
    assert list((work / ".simdistill_cache").glob("*.npz"))


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 truncated zip"])
def test_corrupt_cache_is_rebuilt(dataroot: Path, tmp_path: Path, garbage: bytes) -> None:
    path = info_cache.cache_path(dataroot, "v1.0-trainval", "val", nd.MAX_SWEEPS, cache_dir=tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(garbage)
    assert len(nd.build_infos(dataroot, "v1.0-trainval", "val", cache_dir=tmp_path)) == 3
    assert path.stat().st_size > len(garbage)  # replaced by a good cache


def test_predefined_mini_splits(tmp_path: Path) -> None:
    root = write_mini_dataroot(tmp_path / "mini", version="v1.0-mini", scenes=("scene-0061", "scene-0103"))
    val = nd.build_infos(root, "v1.0-mini", "val", cache_dir=tmp_path)
    assert {i.scene_name for i in val} == {"scene-0103"}
    assert {i.scene_name for i in nd.build_infos(root, "v1.0-mini", "mini_train", cache_dir=tmp_path)} == {"scene-0061"}
    with pytest.raises(ValueError, match="does not belong"):
        nd.split_scene_names(root, "v1.0-mini", "test")


def test_bad_dataroots(dataroot: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        nd.build_infos(tmp_path / "nope", "v1.0-trainval", "val")
    with pytest.raises(ValueError, match="unknown nuScenes version 'v9'"):
        nd.build_infos(dataroot, "v9", "val", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split 'bogus' not in .*splits.json"):
        nd.build_infos(dataroot, "v1.0-trainval", "bogus", cache_dir=tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(dataroot, broken)
    (broken / "v1.0-trainval" / "ego_pose.json").unlink()
    with pytest.raises(FileNotFoundError, match="ego_pose.json"):
        nd.build_infos(broken, "v1.0-trainval", "val", cache_dir=tmp_path)
    (broken / "v1.0-trainval" / "ego_pose.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        nd.build_infos(broken, "v1.0-trainval", "val", cache_dir=tmp_path)
    info = nd.build_infos(dataroot, "v1.0-trainval", "val", cache_dir=tmp_path)[0]
    gone = info.lidar_path.with_name("missing.pcd.bin")
    with pytest.raises(FileNotFoundError, match="missing.pcd.bin"):
        read_lidar_file(gone)
