"""`bag from-nuscenes` on a tiny synthetic world: real rosbag2 files in both storages, read back with rosbags
and cross-read by mcap-ros2-support and rclpy's own deserializer; topics, counts, stamps, frames, identity
R, and ground truth that, carried back to the global frame through the bag's own /tf, equals the devkit's
annotations."""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pyquaternion import Quaternion

from simdistill_ros.bag.bagio import METADATA_VERSION, typestore
from simdistill_ros.bag.from_nuscenes import ConvertOptions, convert, optical_frame
from simdistill_ros.core.config import NUSCENES_CAMERAS
from simdistill_ros.ros.convert import stamp_to_ns

SEC = 1_000_000_000


def read_all(bag: Path) -> list[tuple[str, str, int, Any]]:
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(bag) as r:
        return [(c.topic, c.msgtype, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in r.messages()]


def camera_records(nusc: Any, scene_name: str, cam: str, keyframes_only: bool) -> list[dict[str, Any]]:
    """The independent walk: every sample_data of the camera whose sample is in the scene."""
    scene = next(s for s in nusc.scene if s["name"] == scene_name)
    out = [sd for sd in nusc.sample_data if sd["channel"] == cam
           and nusc.get("sample", sd["sample_token"])["scene_token"] == scene["token"]
           and (sd["is_key_frame"] or not keyframes_only)]
    return sorted(out, key=lambda sd: sd["timestamp"])


@pytest.fixture(scope="module")
def raw_msgs(raw_bag: Path) -> list[tuple[str, str, int, Any]]:
    return read_all(raw_bag)


def test_topics_counts_stamps_and_frames(world, raw_bag: Path, raw_msgs) -> None:  # noqa: ANN001
    nusc = world.nusc
    meta = yaml.safe_load((raw_bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == METADATA_VERSION == 8 and meta["storage_identifier"] == "mcap"
    assert isinstance(meta["custom_data"], dict) and meta["custom_data"]  # Jazzy cannot read a null here
    assert all(isinstance(t["topic_metadata"]["offered_qos_profiles"], str) for t in meta["topics_with_message_count"])
    by_topic: dict[str, list] = defaultdict(list)
    for topic, msgtype, t, msg in raw_msgs:
        by_topic[topic].append((msgtype, t, msg))
    log_times = [t for _, _, t, _ in raw_msgs]
    assert log_times == sorted(log_times)
    for cam in NUSCENES_CAMERAS:
        records = [sd for s in world.scenes for sd in camera_records(nusc, s, cam, False)]
        images = by_topic[f"/{cam.lower()}/image_raw"]
        infos = by_topic[f"/{cam.lower()}/camera_info"]
        assert len(images) == len(infos) == len(records) > 0
        for (mtype, t, img), (_, t_i, info), sd in zip(images, infos, records):
            stamp = sd["timestamp"] * 1000
            assert mtype == "sensor_msgs/msg/Image" and img.encoding == "rgb8"
            assert stamp_to_ns(img.header.stamp) == t == stamp == stamp_to_ns(info.header.stamp) == t_i
            assert img.header.frame_id == info.header.frame_id == optical_frame(cam)
            assert (info.height, info.width) == (img.height, img.width) == (sd["height"], sd["width"])
            K = np.asarray(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
            np.testing.assert_allclose(info.k.reshape(3, 3), K)
            np.testing.assert_array_equal(info.r.reshape(3, 3), np.eye(3))
            np.testing.assert_allclose(info.p.reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
            assert info.distortion_model == "plumb_bob" and not np.any(info.d)
    # the cameras of a key frame carry their own stamps, not the LiDAR's
    lidar_stamps = {t for _, t, _ in by_topic["/lidar_top/points"]}
    front = {t for _, t, _ in by_topic["/cam_front/image_raw"]}
    assert lidar_stamps and not (front & lidar_stamps)
    (_, _, static), = by_topic["/tf_static"]
    children = {tf.child_frame_id: tf for tf in static.transforms}
    assert set(children) == {optical_frame(c) for c in NUSCENES_CAMERAS} | {"lidar_top"}
    assert {tf.header.frame_id for tf in static.transforms} == {"base_link"}
    sd0 = camera_records(nusc, world.scenes[0], "CAM_FRONT", False)[0]
    cs = nusc.get("calibrated_sensor", sd0["calibrated_sensor_token"])
    tf = children[optical_frame("CAM_FRONT")].transform
    q, p = tf.rotation, tf.translation
    np.testing.assert_allclose(Quaternion(q.w, q.x, q.y, q.z).rotation_matrix,
                               Quaternion(cs["rotation"]).rotation_matrix, atol=1e-9)
    np.testing.assert_allclose([p.x, p.y, p.z], cs["translation"], atol=1e-12)
    pose_stamps = {sd["timestamp"] * 1000 for sd in nusc.sample_data
                   if nusc.get("sample", sd["sample_token"])["scene_token"] in {s["token"] for s in nusc.scene}}
    assert {t for _, t, _ in by_topic["/tf"]} == pose_stamps
    assert len(by_topic["/gt/detections"]) == len(by_topic["/gt/markers"]) == len(nusc.sample)


def test_ground_truth_back_in_global_equals_the_devkit(world, raw_msgs) -> None:  # noqa: ANN001
    from nuscenes.eval.detection.utils import category_to_detection_name

    nusc = world.nusc
    poses = {}
    for topic, _, t, msg in raw_msgs:
        if topic == "/tf":
            (tf,) = msg.transforms
            assert (tf.header.frame_id, tf.child_frame_id) == ("map", "base_link")
            r, p = tf.transform.rotation, tf.transform.translation
            poses[t] = (Quaternion(r.w, r.x, r.y, r.z), np.array([p.x, p.y, p.z]))
    gts = {t: msg for topic, _, t, msg in raw_msgs if topic == "/gt/detections"}
    velocity = {t: {m.id: m for m in msg.markers if m.ns == "gt_velocity"} for topic, _, t, msg in raw_msgs
                if topic == "/gt/markers"}
    checked = 0
    for sample in nusc.sample:
        stamp = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["timestamp"] * 1000
        msg = gts[stamp]
        assert msg.header.frame_id == "base_link" and stamp_to_ns(msg.header.stamp) == stamp
        anns = [nusc.get("sample_annotation", a) for a in sample["anns"]]
        anns = [a for a in anns if category_to_detection_name(a["category_name"]) is not None
                and a["num_lidar_pts"] + a["num_radar_pts"] > 0]
        assert len(msg.detections) == len(anns) > 0
        q_ego, t_ego = poses[stamp]
        for i, (d, ann) in enumerate(zip(msg.detections, anns)):
            assert d.id == ann["token"]
            assert d.results[0].hypothesis.class_id == category_to_detection_name(ann["category_name"])
            c, o, s = d.bbox.center.position, d.bbox.center.orientation, d.bbox.size
            centre = q_ego.rotate([c.x, c.y, c.z]) + t_ego
            np.testing.assert_allclose(centre, ann["translation"], atol=1e-6)
            np.testing.assert_allclose([s.y, s.x, s.z], ann["size"], atol=1e-9)  # nuScenes: w, l, h
            # boxes carry yaw only: the heading of the annotation's x axis in the (possibly tilted) ego frame
            R = (q_ego.inverse * Quaternion(ann["rotation"])).rotation_matrix
            yaw_ref = np.arctan2(R[1, 0], R[0, 0])
            yaw = Quaternion(o.w, o.x, o.y, o.z).yaw_pitch_roll[0]
            assert abs(o.x) < 1e-12 and abs(o.y) < 1e-12
            assert abs(np.angle(np.exp(1j * (yaw - yaw_ref)))) < 1e-9
            a, b = velocity[stamp][i].points
            v_ego = q_ego.inverse.rotate(np.nan_to_num(nusc.box_velocity(ann["token"])))  # vx, vy in base_link
            np.testing.assert_allclose([b.x - a.x, b.y - a.y, b.z - a.z], [v_ego[0], v_ego[1], 0.0], atol=1e-6)
            checked += 1
    assert checked > 10


def test_sqlite3_jpeg_bag_is_cross_read_by_rclpy(world, jpeg_bag: Path) -> None:  # noqa: ANN001
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    classes = {"sensor_msgs/msg/CompressedImage": CompressedImage, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "tf2_msgs/msg/TFMessage": TFMessage, "vision_msgs/msg/Detection3DArray": Detection3DArray}
    db = next(jpeg_bag.glob("*.db3"))
    con = sqlite3.connect(db)
    rows = con.execute("SELECT topics.name, topics.type, messages.timestamp, messages.data FROM messages "
                       "JOIN topics ON topics.id = messages.topic_id ORDER BY messages.timestamp").fetchall()
    con.close()
    ours = read_all(jpeg_bag)
    assert len(rows) == len(ours)
    seen = set()
    nusc = world.nusc
    for (topic, msgtype, t, data), (_, _, _, mine) in zip(rows, ours):
        if msgtype not in classes:
            continue
        msg = deserialize_message(bytes(data), classes[msgtype])
        seen.add(msgtype)
        assert stamp_to_ns(msg.header.stamp) == t if hasattr(msg, "header") else True
        if msgtype.endswith("CompressedImage"):
            assert msg.format == "jpeg"
            sd = next(sd for sd in nusc.sample_data if sd["timestamp"] * 1000 == t
                      and topic == f"/{sd['channel'].lower()}/image_raw/compressed")
            assert sd["is_key_frame"]
            assert bytes(msg.data) == (world.root / sd["filename"]).read_bytes()  # the dataset's JPEG as it is
        elif msgtype.endswith("CameraInfo"):
            np.testing.assert_array_equal(np.asarray(msg.k), mine.k)
            np.testing.assert_array_equal(np.asarray(msg.r), np.eye(3).reshape(-1))
        elif msgtype.endswith("Detection3DArray"):
            assert [d.id for d in msg.detections] == [d.id for d in mine.detections]
            assert [d.bbox.size.x for d in msg.detections] == [d.bbox.size.x for d in mine.detections]
    assert seen == set(classes)


def test_mcap_bag_is_cross_read_by_mcap_ros2(raw_bag: Path, raw_msgs) -> None:  # noqa: ANN001
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with next(raw_bag.glob("*.mcap")).open("rb") as fh:  # decoded from the schemas stored in the file
        theirs = [(c.topic, m.log_time, ros) for _, c, m, ros in
                  make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages(log_time_order=True)]
    assert len(theirs) == len(raw_msgs)
    for (topic_m, t_m, ros), (topic, _, t, mine) in zip(theirs, raw_msgs):
        assert (topic_m, t_m) == (topic, t)
        if topic == "/cam_front/image_raw":
            assert bytes(ros.data) == mine.data.tobytes() and ros.encoding == "rgb8"
        elif topic == "/gt/detections":
            assert [d.bbox.center.position.x for d in ros.detections] == \
                [d.bbox.center.position.x for d in mine.detections]
        elif topic == "/lidar_top/points":
            assert ros.point_step == 20 and [f.name for f in ros.fields][:3] == ["x", "y", "z"]


def test_existing_output_is_refused_and_a_bad_record_leaves_nothing(world, raw_bag: Path, tmp_path: Path) -> None:  # noqa: ANN001
    before = sorted(p.name for p in raw_bag.iterdir())
    with pytest.raises(FileExistsError, match="exists"):
        convert(world.nusc, world.scenes, raw_bag, ConvertOptions(), progress=False)
    assert sorted(p.name for p in raw_bag.iterdir()) == before
    with pytest.raises(ValueError, match="scene 'scene-9999' is not in the database"):
        convert(world.nusc, ["scene-9999"], tmp_path / "x", ConvertOptions(), progress=False)
    # a missing image: the error names the camera and the file; no bag and no temporary is left
    sd = camera_records(world.nusc, world.scenes[1], "CAM_BACK", False)[-1]
    image = world.root / sd["filename"]
    moved = image.with_suffix(".moved")
    image.rename(moved)
    try:
        with pytest.raises(FileNotFoundError, match=f"camera CAM_BACK .*{image.name}"):
            convert(world.nusc, world.scenes, tmp_path / "broken", ConvertOptions(), progress=False)
    finally:
        moved.rename(image)
    assert list(tmp_path.iterdir()) == []


def test_from_nuscenes_command(world, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    from simdistill_ros.cli import main

    args = ["bag", "from-nuscenes", "--dataroot", str(world.root), "--split", "val", "--out", str(tmp_path / "val"),
            "--keyframes-only", "--storage", "sqlite3", "--no-progress"]
    assert main(args) == 0
    assert "1 scenes, 2 key frames, 12 camera images" in capsys.readouterr().out
    meta = yaml.safe_load((tmp_path / "val" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "sqlite3" and meta["custom_data"]["scenes"] == "scene-0003"
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args[:-1], "--force", "--no-progress"]) == 0
    assert main(["bag", "from-nuscenes", "--dataroot", str(world.root), "--scene", "nope", "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    assert "scene 'nope' is not in the database" in capsys.readouterr().err
