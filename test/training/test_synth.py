"""The synthetic world as a nuScenes dataroot: devkit compatibility, sensor/annotation agreement,
velocities, determinism and safe writing. One tiny dataset (2 scenes x 3 samples at 90x160) is shared."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box, view_points
from nuscenes.utils.splits import create_splits_scenes
from pyquaternion import Quaternion

from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.config import NUSCENES_CAMERAS
from training.data.synth import generate
from training.data.synth import rig
from training.data.synth.render import render_camera
from training.data.synth.world import make_world

SEED, SCENES, SAMPLES, SIZE, SWEEPS = 5, 2, 3, (90, 160), 2
VERSION = "v1.0-trainval"


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written through the CLI entry point, with two workers."""
    from simdistill_ros.cli import main

    out = tmp_path_factory.mktemp("synth") / "nuscenes"
    rc = main(["synth", "--out", str(out), "--scenes", str(SCENES), "--samples-per-scene", str(SAMPLES),
               "--seed", str(SEED), "--image-size", *map(str, SIZE), "--sweeps", str(SWEEPS), "--workers", "2"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def nusc(dataroot: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(dataroot), verbose=False)


def _scene_index(nusc: NuScenes, sample: dict) -> int:
    log = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])
    return int(log["logfile"].rsplit("-", 1)[1])


def _lidar_global(nusc: NuScenes, sd_token: str) -> np.ndarray:
    """Key-frame LiDAR points in the global frame, the devkit's way (3, N)."""
    sd = nusc.get("sample_data", sd_token)
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token))
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pose["translation"]))
    return pc.points[:3]


def _in_box(nusc: NuScenes, ann: str, xyz: np.ndarray) -> np.ndarray:
    """Mask of points inside an annotation's box (a cheap distance pre-filter, then the devkit)."""
    box = nusc.get_box(ann)
    mask = np.linalg.norm(xyz[:2] - box.center[:2, None], axis=0) <= np.linalg.norm(box.wlh) / 2 + 0.5
    mask[mask] = points_in_box(box, xyz[:, mask])
    return mask


def test_devkit_loads_dataroot_with_all_classes(dataroot: Path, nusc: NuScenes) -> None:
    assert len(nusc.scene) == SCENES and len(nusc.sample) == SCENES * SAMPLES
    names = {category_to_detection_name(a["category_name"]) for a in nusc.sample_annotation}
    assert set(CLASS_NAMES) <= names
    for sd in nusc.sample_data:
        assert Path(nusc.get_sample_data_path(sd["token"])).is_file(), sd["filename"]
    sample = nusc.sample[1]
    assert set(sample["data"]) == set(NUSCENES_CAMERAS) | {"LIDAR_TOP"}
    lidar_ts = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["timestamp"]
    assert lidar_ts == sample["timestamp"]
    for cam in NUSCENES_CAMERAS:
        spec = next(c for c in rig.CAMERAS if c.channel == cam)
        sd = nusc.get("sample_data", sample["data"][cam])
        assert 7_000 <= sd["timestamp"] - lidar_ts <= 49_000
        assert (sd["height"], sd["width"]) == SIZE
        path, boxes, k = nusc.get_sample_data(sd["token"])
        assert k[0, 0] == pytest.approx(spec.f * SIZE[1] / 1600) and 80 < k[0, 0] < 130  # nuScenes f scaled
    _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    assert len(boxes) == len(sample["anns"]) > 0
    points = np.fromfile(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]), dtype=np.float32).reshape(-1, 5)
    assert len(points) > 1000 and set(np.unique(points[:, 4])) <= set(range(32))
    # LiDAR chain: key frames with SWEEPS sweeps between them, linked both ways, increasing in time
    scene = nusc.scene[0]
    sd = nusc.get("sample_data", nusc.get("sample", scene["first_sample_token"])["data"]["LIDAR_TOP"])
    chain = [sd]
    while sd["next"]:
        nxt = nusc.get("sample_data", sd["next"])
        assert nxt["prev"] == sd["token"] and nxt["timestamp"] > sd["timestamp"]
        chain.append(sd := nxt)
    assert len(chain) == SAMPLES + (SAMPLES - 1) * SWEEPS
    assert sum(c["is_key_frame"] for c in chain) == SAMPLES
    # sizes are (w, l, h); attributes and visibilities are real nuScenes names/tokens
    cars = [a for a in nusc.sample_annotation if a["category_name"] == "vehicle.car"]
    assert all(a["size"][0] < a["size"][1] for a in cars)
    assert {a["visibility_token"] for a in nusc.sample_annotation} <= {"1", "2", "3", "4"}
    assert {"vehicle.moving", "vehicle.parked", "cycle.with_rider", "pedestrian.moving"} <= {
        nusc.get("attribute", t)["name"] for a in nusc.sample_annotation for t in a["attribute_tokens"]}
    # the split: splits.json and the devkit's own split lists agree on every scene
    splits = json.loads((dataroot / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"]) == sorted(s["name"] for s in nusc.scene)
    assert len(splits["val"]) >= 1
    devkit = create_splits_scenes()
    assert set(splits["train"]) <= set(devkit["train"]) and set(splits["val"]) <= set(devkit["val"])


def test_num_lidar_pts_counts_keyframe_points_in_box(nusc: NuScenes) -> None:
    checked = 0
    for sample in nusc.sample:
        xyz = _lidar_global(nusc, sample["data"]["LIDAR_TOP"])
        for ann in sample["anns"]:
            rec = nusc.get("sample_annotation", ann)
            n = int(_in_box(nusc, ann, xyz).sum())
            assert n == rec["num_lidar_pts"], rec["category_name"]
            checked += n > 0
    assert checked > 20


def test_lidar_points_in_box_project_onto_the_rendered_object(nusc: NuScenes) -> None:
    """Points inside a box land, in every camera, on pixels where that object was rendered; the
    renderer's call reproduces the stored JPEG."""
    import cv2

    hits = total = 0
    for sample in nusc.sample[:SAMPLES]:
        scene = _scene_index(nusc, sample)
        world = make_world(SEED, scene, (SAMPLES - 1) * 0.5)
        start = nusc.get("sample", nusc.get("scene", sample["scene_token"])["first_sample_token"])["timestamp"]
        t_key = (sample["timestamp"] - start) * 1e-6
        centres, _, _ = world.object_state(t_key)
        xyz = _lidar_global(nusc, sample["data"]["LIDAR_TOP"])
        frames = {}
        for cam in rig.CAMERAS:
            sd = nusc.get("sample_data", sample["data"][cam.channel])
            frame = render_camera(world, (sd["timestamp"] - start) * 1e-6, cam, SIZE)
            stored = cv2.imread(nusc.get_sample_data_path(sd["token"]))[..., ::-1].astype(np.int16)
            assert np.abs(stored - frame.image).mean() < 6.0
            frames[cam.channel] = (sd, frame)
        for ann in sample["anns"]:
            box = nusc.get_box(ann)
            inside = xyz[:, _in_box(nusc, ann, xyz)]
            if inside.shape[1] < 5:
                continue
            obj = int(np.argmin(np.linalg.norm(centres - box.center, axis=1)))
            assert np.linalg.norm(centres[obj] - box.center) < 1e-6
            for sd, frame in frames.values():
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                pose = nusc.get("ego_pose", sd["ego_pose_token"])
                p = Quaternion(pose["rotation"]).rotation_matrix.T @ (inside - np.array(pose["translation"])[:, None])
                p = Quaternion(cs["rotation"]).rotation_matrix.T @ (p - np.array(cs["translation"])[:, None])
                front = p[2] > 1.0
                uv = view_points(p[:, front], np.array(cs["camera_intrinsic"]), normalize=True)
                u, v = np.rint(uv[0]).astype(int), np.rint(uv[1]).astype(int)  # OpenCV: centres at integers
                ok = (u >= 0) & (u < SIZE[1]) & (v >= 0) & (v < SIZE[0])
                ids = frame.object_id[v[ok], u[ok]]
                hits += int((ids == obj).sum())
                total += int(ok.sum())
    print(f"{hits}/{total} projected in-box points on their object")
    assert total > 100
    assert hits / total > 0.85  # the rest: sub-pixel box edges and the 7-49 ms camera delay


def test_box_velocity_matches_true_velocity(nusc: NuScenes) -> None:
    moving, worst = 0, 0.0
    worlds = [make_world(SEED, i, (SAMPLES - 1) * 0.5) for i in range(SCENES)]
    for ann in nusc.sample_annotation:
        sample = nusc.get("sample", ann["sample_token"])
        world = worlds[_scene_index(nusc, sample)]
        start = nusc.get("sample", nusc.get("scene", sample["scene_token"])["first_sample_token"])["timestamp"]
        centres, _, vel = world.object_state((sample["timestamp"] - start) * 1e-6)
        obj = int(np.argmin(np.linalg.norm(centres - np.array(ann["translation"]), axis=1)))
        est = nusc.box_velocity(ann["token"])
        if not ann["prev"] and not ann["next"]:
            assert np.isnan(est).all()
            continue
        speed = np.linalg.norm(vel[obj])
        # centred differences on the road's arcs are exact to ~1e-3; one-sided ones lag half a step
        tol = 0.01 * speed + 1e-3 if ann["prev"] and ann["next"] else 0.04 * speed + 1e-3
        assert np.linalg.norm(est - vel[obj]) <= tol, (ann["category_name"], est, vel[obj])
        worst = max(worst, np.linalg.norm(est - vel[obj]) / max(speed, 1e-3))
        moving += speed > 1.0
    print(f"worst relative velocity error {worst:.4f}")
    assert moving > 20
    # instance tracks: first -> next ... -> last, forward in time, prev mirrors next
    for inst in nusc.instance:
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        assert ann["prev"] == "" and ann["instance_token"] == inst["token"]
        count = 1
        while ann["next"]:
            nxt = nusc.get("sample_annotation", ann["next"])
            assert nxt["prev"] == ann["token"]
            time = nusc.get("sample", nxt["sample_token"])["timestamp"]
            assert time > nusc.get("sample", ann["sample_token"])["timestamp"]
            ann, count = nxt, count + 1
        assert ann["token"] == inst["last_annotation_token"] and count == inst["nbr_annotations"]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_files_other_seed_differs(tmp_path: Path) -> None:
    kw = dict(scenes=1, samples_per_scene=2, image_size=(45, 80), sweeps=1, progress=False)
    a = _hashes(generate(tmp_path / "a", seed=11, workers=1, **kw))
    b = _hashes(generate(tmp_path / "b", seed=11, workers=2, **kw))
    c = _hashes(generate(tmp_path / "c", seed=12, workers=1, **kw))
    assert a == b and len(a) > 20
    assert set(a) != set(c) or any(a[k] != c[k] for k in a)
    images = [k for k in a if k.endswith(".jpg")]
    assert images and all(a[k] != c.get(k) for k in images)


def test_existing_out_refused_and_failures_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.data.synth.writer as gm
    from simdistill_ros.cli import main

    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    kw = dict(scenes=1, samples_per_scene=2, seed=1, image_size=(45, 80), sweeps=0, progress=False)
    with pytest.raises(FileExistsError):
        gm.generate(out, **kw)
    assert main(["synth", "--out", str(out), "--scenes", "1", "--samples-per-scene", "2", "--seed", "1"]) == 2
    assert (out / "keep.txt").read_text() == "mine"
    for bad in (dict(scenes=0), dict(samples_per_scene=1), dict(sweeps=-1), dict(version="v9"),
                dict(image_size=(0, 80))):
        with pytest.raises(ValueError):
            gm.generate(tmp_path / "bad", **{**kw, **bad})
    assert not (tmp_path / "bad").exists()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(gm, "render_lidar", boom)
    with pytest.raises(RuntimeError):
        gm.generate(out, force=True, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder left
    assert (out / "keep.txt").read_text() == "mine"  # the old dataroot survives a failed --force
    monkeypatch.undo()
    gm.generate(out, force=True, **kw)
    assert not (out / "keep.txt").exists() and (out / "v1.0-trainval" / "sample.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_published_dataroot_gets_umask_permissions(tmp_path: Path) -> None:
    """The dataroot folder is published like a plain mkdir (not mkdtemp's owner-only 0o700)."""
    old = os.umask(0o022)
    try:
        out = generate(tmp_path / "data", scenes=1, samples_per_scene=2, seed=1, image_size=(45, 80), sweeps=0,
                       progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_jpeg_encoding_failure_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.data.synth.writer as gm

    assert len(gm.encode_jpeg(np.zeros((8, 8, 3), np.uint8))) > 0
    monkeypatch.setattr(gm.cv2, "imencode", lambda *a: (False, None))
    with pytest.raises(RuntimeError, match="JPEG encoding"):
        gm.encode_jpeg(np.zeros((8, 8, 3), np.uint8))


def _pitch_roll(R: np.ndarray) -> tuple[float, float]:
    """Pitch and roll (rad) of a Rz Ry Rx body rotation, by hand."""
    return float(np.arcsin(-R[2, 0])), float(np.arctan2(R[2, 1], R[2, 2]))


def test_world_makes_monocular_depth_ambiguous() -> None:
    """Over 24 scenes (no rendering): the ego body pitches and rolls about +-1 deg and changes between
    key frames; the ground 30 m ahead leaves the plane under the ego by decimetres; objects stand on the
    ground; sizes spread per class as CLASS_SIZE_CV says; the rarer classes have no fixed place; ego-lane
    traffic never comes near the ego."""
    from training.data.synth.world import (BOX_BOTTOM, CLASS_SIZE_CV, CLASS_SPECS, CURB, CURB_HEIGHT, EGO_BODY,
                                           EGO_CLEARANCE, LANES)

    pitch, roll, step_change, off_plane, sizes = [], [], [], [], {}
    bus_rel, bus_lat = [], []
    for index in range(24):
        world = make_world(7, index, 9.5)
        for k in range(20):
            ego, R = world.ego_pose(0.5 * k)
            p, r = _pitch_roll(R)
            pitch.append(p)
            roll.append(r)
            if k:
                step_change.append(abs(p - pitch[-2]))
            # the ground 30 m ahead of the ego, against the plane of the ego body's x-y axes
            s_ego = world.ego_s0 + world.ego_speed * 0.5 * k
            x, y = world.road.point(np.array(s_ego + 30.0), np.array(world.ego_lateral))
            z = world.terrain.height(np.array(s_ego + 30.0), np.array(world.ego_lateral))
            off_plane.append(abs(float(R[:, 2] @ (np.array([float(x), float(y), float(z)]) - ego))))
        centre, _, _ = world.object_state(3.0)
        s = world.s0 + world.speed * 3.0
        np.testing.assert_allclose(centre[:, 2] - world.size_wlh[:, 2] / 2 - BOX_BOTTOM,
                                   world.terrain.height(s, world.lateral), atol=1e-9)
        for cls, cat, size in zip(world.classes, world.categories, world.size_wlh):
            if cls in CLASS_SIZE_CV and cat == CLASS_SPECS[cls][0]:  # children are a category of their own
                sizes.setdefault(cls, []).append(size)
        mid = world.ego_speed * 9.5 / 2
        for o in np.flatnonzero(np.array(world.classes) == "bus"):
            bus_rel.append(world.s0[o] + world.speed[o] * 4.75 - mid)
            bus_lat.append(round(float(world.lateral[o]), 0))
        ego_lane = np.flatnonzero(np.abs(world.lateral + LANES[0]) < 0.5)
        for t in np.linspace(0.0, 9.5, 39):
            rel = world.s0[ego_lane] + world.speed[ego_lane] * t - (world.ego_speed * t + sum(EGO_BODY) / 2)
            gap = world.size_wlh[ego_lane, 1] / 2 + (EGO_BODY[1] - EGO_BODY[0]) / 2 + EGO_CLEARANCE
            assert np.all(np.abs(rel) >= gap - 1e-9), f"scene {index}: ego-lane traffic reaches the ego at {t} s"
        assert world.terrain.height(np.array(0.0), np.array(CURB + 1.0)) - world.terrain.height(
            np.array(0.0), np.array(CURB - 1e-3)) == pytest.approx(CURB_HEIGHT, abs=1e-4)
    pitch_deg, roll_deg = np.degrees(pitch), np.degrees(roll)
    assert 0.3 < pitch_deg.std() < 1.5 and np.abs(pitch_deg).max() < 4.0, pitch_deg.std()
    assert 0.15 < roll_deg.std() < 1.5 and np.abs(roll_deg).max() < 3.0, roll_deg.std()
    assert np.median(np.degrees(step_change)) > 0.1  # the jitter changes from key frame to key frame
    assert np.median(off_plane) > 0.05 and np.percentile(off_plane, 90) > 0.2, np.percentile(off_plane, [50, 90])
    for cls, values in sizes.items():
        arr = np.array(values)
        if len(arr) < 30:
            continue
        cv = arr.std(0) / arr.mean(0)
        np.testing.assert_allclose(cv, CLASS_SIZE_CV[cls], rtol=0.35, err_msg=cls)
    assert min(max(CLASS_SIZE_CV[c]) for c in CLASS_SIZE_CV) >= 0.1  # every class spreads >= 10 % somewhere
    assert len(bus_rel) >= 24 and np.std(bus_rel) > 20.0 and len(set(bus_lat)) >= 3, (np.std(bus_rel), set(bus_lat))


def test_annotation_follows_what_the_sensors_saw() -> None:
    """tables.annotation_mask: annotated where seen (LiDAR points, or enough camera pixels) and through
    occlusions between the first and last sighting; never when unseen all scene or out of range."""
    from training.data.synth.tables import SampleStats, annotation_mask, candidates, min_visible_pixels
    from training.data.synth.world import make_timeline

    world = make_world(3, 0, 2.0)
    tl = make_timeline(3, 0, 5, 0, [c.offset_us for c in rig.CAMERAS])
    size = (900, 1600)
    cand = [set(candidates(world, tl.seconds(us)).tolist()) for us in tl.keys]
    always = sorted(set.intersection(*cand))
    a, b, c, d = always[:4]
    n = world.num_objects
    lidar, vis = np.zeros((5, n), np.int64), np.zeros((5, n), np.int64)
    lidar[0, a], lidar[3, a] = 5, 2  # a: LiDAR at key frames 0 and 3, occluded in between
    vis[2, b] = min_visible_pixels(size)  # b: only a camera sees it, once
    vis[2, c] = min_visible_pixels(size) - 1  # c: too few pixels
    stats = {(0, k): SampleStats(0, k, np.zeros(n, np.int64), vis[k], lidar[k]) for k in range(5)}
    mask = annotation_mask(world, tl, stats, 0, size)
    assert mask[:, a].tolist() == [True, True, True, True, False]
    assert mask[:, b].tolist() == [False, False, True, False, False]
    assert not mask[:, c].any() and not mask[:, d].any()
    assert min_visible_pixels((90, 160)) == 1
    outside = [o for o in range(n) if o not in set.union(*cand)]
    lidar[:, outside] = 9  # seen but out of range or of no detection class: never annotated
    mask = annotation_mask(world, tl, {(0, k): SampleStats(0, k, np.zeros(n, np.int64), vis[k], lidar[k])
                                       for k in range(5)}, 0, size)
    assert not mask[:, outside].any()


def test_renderer_pixel_centres_follow_opencv_convention() -> None:
    """A single box in front of CAM_FRONT: exactly the pixels whose centres (j, i) lie inside the box's
    projected outline (corners projected with K by hand, outline from shapely) show the object; a
    half-pixel offset of the rays would flip a band of pixels along every edge."""
    import dataclasses

    import shapely
    from shapely.geometry import MultiPoint

    from training.data.synth.render import box_corners, object_parts, sensor_pose

    world = make_world(4, 0, 1.0)
    ego, _ = world.ego_pose(0.5)
    bus = int(np.flatnonzero(np.array(world.kinds) == "block")[0])
    keep = slice(bus, bus + 1)
    arrays = {f.name: getattr(world, f.name)[keep] for f in dataclasses.fields(world)
              if isinstance(getattr(world, f.name), np.ndarray)}
    tuples = {name: (getattr(world, name)[bus],) for name in ("classes", "kinds", "categories", "attributes")}
    one = dataclasses.replace(world, **arrays, **tuples)
    # put it ~20 m ahead of the ego, in the next lane, standing still
    s_ego = world.ego_s0 + world.ego_speed * 0.5
    one = dataclasses.replace(one, s0=np.array([s_ego + 22.0]), lateral=np.array([world.ego_lateral + 3.6]),
                              speed=np.array([0.0]), yaw_offset=np.array([0.3]))
    cam = rig.CAMERAS[0]
    size = (90, 160)
    frame = render_camera(one, 0.5, cam, size)
    origin, rot = sensor_pose(one, 0.5, cam.translation, rig.camera_to_ego(cam))
    pc, half, yaw = object_parts(one, 0.5)
    corners = box_corners(pc[:, 0], half[:, 0], yaw)[0]  # the single part of a block
    cam_pts = (corners - origin) @ rot
    assert (cam_pts[:, 2] > 1.0).all()
    K = rig.intrinsics(cam, size)
    uv = cam_pts @ K.T
    outline = MultiPoint([tuple(p) for p in uv[:, :2] / uv[:, 2:]]).convex_hull
    jj, ii = np.meshgrid(np.arange(size[1]), np.arange(size[0]))
    centres = shapely.points(jj.ravel(), ii.ravel())
    clear = shapely.distance(outline.exterior, centres) >= 0.02  # a centre on the outline may go either way
    within = shapely.contains(outline, centres)
    ids = frame.object_id.ravel()
    np.testing.assert_array_equal(ids[clear & within], 0)
    np.testing.assert_array_equal(ids[clear & ~within], -1)
    inside, outside = int((clear & within).sum()), int((clear & ~within).sum())
    assert inside > 200 and outside > 200
