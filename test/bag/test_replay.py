"""`bag replay`: one Detection3DArray per synchronised set, stamped like its anchor image, in base_link, equal
to Detector.detect on a Frame built independently from the devkit's records; ground truth as predictions
scores AP 1 on every class present; bad bags are reported, never fatal; and the command's report."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simdistill_ros.bag.bagio import BagError, BagWriter, typestore
from simdistill_ros.bag.replay import DETECTIONS_TOPIC, MARKERS_TOPIC, ReplayResult, replay
from simdistill_ros.bag.settings import default_params_file, replay_params
from simdistill_ros.bag_report import build_report, format_table, score
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.types import CameraCalibration, Frame
from simdistill_ros.ros.convert import detection_array_to_boxes, stamp_to_ns
from simdistill_ros.ros.params import NodeParams

MAX_DET = 40
THRESHOLD = 0.2


def read(bag: Path, topics: set[str] | None = None) -> list[tuple[str, int, Any]]:
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(bag) as r:
        conns = [c for c in r.connections if topics is None or c.topic in topics]
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in r.messages(connections=conns)]


@pytest.fixture(scope="module")
def detector(checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(checkpoint, score_threshold=THRESHOLD, max_detections=MAX_DET)


def params_for(checkpoint: Path, **overrides: Any) -> NodeParams:
    return replay_params(default_params_file(), checkpoint, {"motion_frame": "map", "score_threshold": THRESHOLD,
                                                            "max_detections": MAX_DET, **overrides})


@pytest.fixture(scope="module")
def replayed(raw_bag: Path, checkpoint: Path, detector: Detector, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[ReplayResult, Path]:
    out = tmp_path_factory.mktemp("replay") / "out"
    return replay(raw_bag, params_for(checkpoint), detector, out, pictures=1, progress=False), out


def _T(rec: dict[str, Any]) -> np.ndarray:
    from pyquaternion import Quaternion

    T = np.eye(4)
    T[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
    T[:3, 3] = rec["translation"]
    return T


def reference_frame(nusc: Any, sample: dict[str, Any], cameras: tuple[str, ...]) -> Frame:
    """The key frame's cameras from the devkit records: JPEGs decoded by OpenCV, K, and cam_to_ego at CAM_FRONT's
    stamp = inv(ego pose at CAM_FRONT) @ ego pose at the camera @ the camera's mount."""
    import cv2

    sds = {c: nusc.get("sample_data", sample["data"][c]) for c in cameras}
    anchor_pose = _T(nusc.get("ego_pose", sds["CAM_FRONT"]["ego_pose_token"]))
    images, calibs = [], []
    for c in cameras:
        sd = sds[c]
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        T = np.linalg.inv(anchor_pose) @ _T(nusc.get("ego_pose", sd["ego_pose_token"])) @ _T(cs)
        img = cv2.imread(str(Path(nusc.dataroot) / sd["filename"]))[:, :, ::-1].copy()
        images.append(img)
        calibs.append(CameraCalibration(c, np.asarray(cs["camera_intrinsic"]), T, img.shape[:2]))
    return Frame(tuple(images), tuple(calibs), sds["CAM_FRONT"]["timestamp"] * 1000)


def test_one_detection_array_per_set_equal_to_detect(world, replayed, detector: Detector) -> None:  # noqa: ANN001
    result, out = replayed
    nusc = world.nusc
    cams = detector.config.model.camera_names
    dets = [(t, m) for topic, t, m in read(out, {DETECTIONS_TOPIC})]
    markers = read(out, {MARKERS_TOPIC})
    anchors = sorted(sd["timestamp"] * 1000 for sd in nusc.sample_data if sd["channel"] == "CAM_FRONT")
    assert [t for t, _ in dets] == [stamp_to_ns(m.header.stamp) for _, m in dets] == anchors
    assert [t for _, t, _ in markers] == anchors
    assert all(m.header.frame_id == "base_link" for _, m in dets)
    assert result.sync["emitted"] == len(result.emitted) == len(anchors) and result.sync["partial"] == 0
    by_stamp = dict(dets)
    compared = 0
    for sample in nusc.sample:
        ref = detector.detect(reference_frame(nusc, sample, cams))
        boxes, scores, names = detection_array_to_boxes(by_stamp[ref.stamp_ns])
        assert len(boxes) == len(ref) > 0
        np.testing.assert_allclose(boxes[:, :6], ref.boxes[:, :6], atol=2e-3)
        np.testing.assert_allclose(np.angle(np.exp(1j * (boxes[:, 6] - ref.boxes[:, 6]))), 0.0, atol=2e-3)
        np.testing.assert_allclose(scores, ref.scores, atol=2e-3)
        assert names == ref.names
        compared += 1
    assert compared == len(nusc.sample)
    copied = {t for t, _, _ in read(out, {"/tf_static", "/gt/detections"})}
    assert copied == {"/tf_static", "/gt/detections"}


def test_ground_truth_as_predictions_scores_ap_one(world, replayed) -> None:  # noqa: ANN001
    result, _ = replayed
    assert set(result.matches) == set(result.gt) and None not in result.matches.values()
    # the key frame's boxes moved to the set's stamp through map: inv(pose at set) @ pose at key frame
    nusc = world.nusc
    sample = nusc.sample[0]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    front = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    t_gt = lidar["timestamp"] * 1000
    T = np.linalg.inv(_T(nusc.get("ego_pose", front["ego_pose_token"]))) @ _T(nusc.get("ego_pose", lidar["ego_pose_token"]))
    gt, moved = result.gt[t_gt], result.gt_aligned[t_gt]
    np.testing.assert_allclose(moved.boxes[:, :3], gt.boxes[:, :3] @ T[:3, :3].T + T[:3, 3], atol=1e-3)
    assert moved.stamp_ns == front["timestamp"] * 1000 and not np.allclose(moved.boxes[:, :2], gt.boxes[:, :2])
    perfect = score(result.gt_aligned, result.gt_aligned)
    present = {n for d in result.gt.values() for n in d.names}
    assert len(present) >= 3
    for name in present:
        assert perfect["per_class"][name]["AP"] == pytest.approx(1.0), name
        assert perfect["per_class"][name]["ATE"] == pytest.approx(0.0, abs=1e-6)
    random_weights = score(result.gt_aligned, result.predictions())
    assert random_weights["mAP"] < 0.5


def copy_bag(src: Path, dst: Path, drop: set[str] = frozenset(), unknown_topic: bool = False) -> Path:
    """A copy of a bag without some topics, optionally with a topic of a type no type store has."""
    from rosbags.rosbag2 import Reader

    with Reader(src) as r, BagWriter(dst, "sqlite3", {}) as w:
        for c in r.connections:
            if c.topic not in drop:
                w.add_topic(c.topic, c.msgtype, transient_local=c.topic == "/tf_static")
        if unknown_topic:
            w.add_topic("/radar/strange", "strange_msgs/msg/Blob", definition=("uint8 x", "RIHS01_" + "0" * 64))
            w.write_raw("/radar/strange", r.start_time, b"\x00\x01\x00\x00\x07")
        for c, t, raw in r.messages():
            if c.topic not in drop:
                w.write_raw(c.topic, t, raw)
    return dst


def test_bad_bags_are_reported_never_fatal(jpeg_bag: Path, checkpoint: Path, detector: Detector, tmp_path: Path) -> None:
    p = params_for(checkpoint, compressed=True,
                   image_topics=[f"{c.lower()}/image_raw/compressed" for c in detector.config.model.camera_names])
    good = replay(jpeg_bag, p, detector, None, progress=False)
    assert len(good.emitted) == 2 and good.read.first_bad_record == ""
    # a camera without CameraInfo, a bag without TF: every set dropped, counted, the reason names the topic
    no_info = replay(copy_bag(jpeg_bag, tmp_path / "no_info", {"/cam_back/camera_info"}), p, detector, None,
                     progress=False)
    assert not no_info.emitted and len(no_info.sets) == 2
    assert no_info.build_drops["camera CAM_BACK: topic /cam_back/camera_info: no CameraInfo received yet"] == 2
    assert no_info.predictions() and all(len(d) == 0 for d in no_info.predictions().values())
    no_tf = replay(copy_bag(jpeg_bag, tmp_path / "no_tf", {"/tf_static"}), p, detector, None, progress=False)
    assert not no_tf.emitted and any("no transform 'cam_front_optical_frame' -> 'base_link'" in k
                                     for k in no_tf.build_drops)
    # a topic of an unknown type is listed and skipped
    odd = replay(copy_bag(jpeg_bag, tmp_path / "odd", unknown_topic=True), p, detector, None, progress=False)
    assert odd.read.unknown_types == {"/radar/strange": "strange_msgs/msg/Blob"} and len(odd.emitted) == 2
    # a corrupt record: skipped and named; its set misses that camera and is dropped
    corrupt = shutil.copytree(jpeg_bag, tmp_path / "corrupt")
    db = next(corrupt.glob("*.db3"))
    con = sqlite3.connect(db)
    (msg_id,) = con.execute("SELECT messages.id FROM messages JOIN topics ON topics.id = messages.topic_id WHERE "
                            "topics.name = '/cam_back/image_raw/compressed' ORDER BY timestamp LIMIT 1").fetchone()
    con.execute("UPDATE messages SET data = ? WHERE id = ?", (b"\x00\x01\x00\x00\xff\xff\xff\x7f", msg_id))
    con.commit()
    con.close()
    bad = replay(corrupt, p, detector, tmp_path / "corrupt_out", progress=False)
    assert bad.read.undecodable == {"/cam_back/image_raw/compressed": 1}
    assert "topic /cam_back/image_raw/compressed" in bad.read.first_bad_record
    assert len(bad.emitted) == 1 and bad.sync["dropped_missing"] == 1
    assert [t for t, _, _ in read(tmp_path / "corrupt_out", {DETECTIONS_TOPIC})] == [DETECTIONS_TOPIC]
    # the wrong image kind and an existing output: clear errors, the output untouched
    with pytest.raises(BagError, match="no topic /cam_front/image_raw for camera CAM_FRONT .*pass --compressed"):
        replay(jpeg_bag, params_for(checkpoint), detector, None, progress=False)
    with pytest.raises(FileExistsError, match="corrupt_out exists"):
        replay(jpeg_bag, p, detector, tmp_path / "corrupt_out", progress=False)


def test_truncated_bag_keeps_what_was_read(raw_bag: Path, checkpoint: Path, detector: Detector, tmp_path: Path) -> None:
    cut = shutil.copytree(raw_bag, tmp_path / "cut")
    mcap = next(cut.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.7)])
    result = replay(cut, params_for(checkpoint), detector, tmp_path / "cut_out", progress=False)
    assert result.read.stopped_early and "reading stopped after" in result.read.first_bad_record
    assert "last good: topic" in result.read.first_bad_record
    written = read(tmp_path / "cut_out", {DETECTIONS_TOPIC})
    assert 0 < len(written) == len(result.emitted) < 4
    mcap.write_bytes(data[:100])  # nothing readable left: a clear error naming the bag
    with pytest.raises(BagError, match="cut.*EndOfFile|cut.*no topic"):
        replay(cut, params_for(checkpoint), detector, None, progress=False)


def test_bag_command_prints_the_table_and_writes_report(raw_bag: Path, checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from simdistill_ros.cli import main

    args = ["bag", "replay", "--bag", str(raw_bag), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
            "--report", str(tmp_path / "r"), "--motion-frame", "map", "--score-threshold", str(THRESHOLD),
            "--max-detections", str(MAX_DET), "--pictures", "1", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "mAP" in text and "NDS" in text and "p99" in text and "network" in text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["sets"]["detected"] == 4 and report["ground_truth"]["key_frames"] == 4
    assert set(report["latency_ms"]["network"]) == {"p50", "p90", "p99", "n"}
    assert report["metrics"]["mAP"] is not None and "car" in report["metrics"]["per_class"]
    assert sorted(p.suffix for p in (tmp_path / "r").iterdir()) == [".json", ".png", ".png"]
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert format_table(build_report(ReplayResult(), {}))  # an empty replay still formats
