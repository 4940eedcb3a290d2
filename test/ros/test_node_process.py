"""detector_node as a real process over DDS on loopback, started with the shipped params file and a tiny
random-weight checkpoint; a peer node publishes six Image + CameraInfo topics of a synthetic sample and
/tf_static, and records detections, markers and /diagnostics. The reference is `Detector.detect` on the
same frame in this process."""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_harness import (MSGS, PARAMS_FILE, PROFILE, NodeProcess, Peer, boxes_of, camera_stamps, env_with,
                         expected_frame, make_checkpoint, sample, values)
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.types import CameraCalibration, Frame
from simdistill_ros.ros.convert import stamp_to_ns

pytestmark = pytest.mark.timeout(180)
MAX_DET = 40
SEC = 1_000_000_000


@dataclass
class Running:
    peer: Peer
    proc: NodeProcess
    reference: Detector
    cameras: tuple[str, ...]
    frame: Frame
    ns: str = ""
    next_t: int = 1_700_000_000 * SEC

    def stamp(self) -> int:
        self.next_t += SEC // 2
        return self.next_t

    def good_set(self, frame: Frame | None = None, timeout: float = 60.0) -> tuple[int, object]:
        """Publish a clean set; returns (anchor stamp, the Detection3DArray it produced)."""
        frame = frame or self.frame
        t = self.stamp()
        stamps = camera_stamps(self.cameras, t)
        self.peer.publish(self.peer.camera_messages(frame, stamps))
        assert self.peer.wait(lambda: any(stamp_to_ns(m.header.stamp) == t for m in self.peer.detections), timeout), \
            f"no detections for the set at {t}; node alive: {self.proc.alive()}\n{self.proc.text()[-2000:]}"
        return t, self.peer.detections_at(t)[0]

    def reference_boxes(self, frame: Frame) -> np.ndarray:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            det = self.reference.detect(frame)
        finally:
            torch.set_num_threads(threads)
        return np.concatenate([det.boxes[:, :7], det.scores[:, None]], axis=1)

    def diag_after(self, name: str, pred, timeout: float = 10.0):  # noqa: ANN001, ANN201
        """The first status `<ns>/detector_node: <name>` matching pred published after this call."""
        name = f"{self.ns.lstrip('/')}/detector_node: {name}".lstrip("/")
        since = self.peer.diag_count()
        found = []

        def check() -> bool:
            found[:] = [s for m in self.peer.diagnostics[since:] for s in m.status if s.name == name and pred(s)]
            return bool(found)

        assert self.peer.wait(check, timeout), f"no {name!r} status matching; last: " + \
            repr([(s.message, values(s)) for m in self.peer.diagnostics[-1:] for s in m.status if s.name == name])
        return found[-1]


def assert_same_boxes(msg: object, ref: np.ndarray) -> None:
    got = boxes_of(msg)
    assert got.shape == ref.shape, f"{len(got)} boxes published, {len(ref)} from Detector.detect"
    order_g, order_r = np.lexsort(got[:, :2].T[::-1]), np.lexsort(ref[:, :2].T[::-1])
    g, r = got[order_g], ref[order_r]
    np.testing.assert_allclose(g[:, :6], r[:, :6], atol=1e-4)
    np.testing.assert_allclose(np.angle(np.exp(1j * (g[:, 6] - r[:, 6]))), 0.0, atol=1e-4)
    np.testing.assert_allclose(g[:, 7], r[:, 7], atol=1e-5)


def launch(tmp: Path, config: DetectorConfig, extra: list[str], compressed: bool = False, ns: str = "",
           profile: bool = False) -> tuple[NodeProcess, Path, dict[str, str]]:
    """Start the node with the shipped params file; reliable QoS so that no test set is lost on a loaded host.
    profile: the single-host Fast DDS profile (shared memory + UDP on 127.0.0.1) for the node and its peer,
    else discovery limited to localhost (test/conftest.py). Returns (process, checkpoint, DDS environment)."""
    env = dict(ROS_AUTOMATIC_DISCOVERY_RANGE="SYSTEM_DEFAULT", FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE)) \
        if profile else {}
    ckpt = make_checkpoint(tmp / "tiny.pt", config)
    cams = config.model.camera_names
    args = ["--ros-args", "--params-file", str(PARAMS_FILE), "-p", f"model:={ckpt}", "-p", f"max_detections:={MAX_DET}",
            "-p", "torch_threads:=1", "-p", "diagnostics_period:=0.25", "-p", "sync_timeout:=0.3",
            "-p", "reliable:=true"]
    if compressed:
        args += ["-p", "compressed:=true", "-p",
                 "image_topics:=[" + ",".join(f"{c.lower()}/image_raw/compressed" for c in cams) + "]"]
    if ns:
        args += ["-r", f"__ns:={ns}"]
    return NodeProcess(args + extra, tmp / "node.log", env=env_with(**env)), ckpt, env


def connect(proc: NodeProcess, ckpt: Path, env: dict[str, str], config: DetectorConfig, compressed: bool = False,
            ns: str = "") -> Running:
    """The peer for a launched node (created under the node's DDS environment), connected, /tf_static sent."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        peer = Peer(config.model.camera_names, compressed=compressed, ns=ns)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    try:
        peer.wait_connected(proc)
        frame = sample(config.model.camera_names, 0, seed=1)
        peer.publish_static_tf(frame)
    except BaseException:
        peer.close()
        proc.stop()
        raise
    ref = Detector.from_checkpoint(ckpt, score_threshold=0.1, max_detections=MAX_DET)
    return Running(peer, proc, ref, config.model.camera_names, frame, ns)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory, small_config: DetectorConfig) -> Iterator[dict[str, tuple]]:
    """Both node processes of this module, started together so their start-up overlaps: the default one
    (raw images, drop policy, localhost discovery) and one in namespace /masked (PNG CompressedImage,
    mask policy, the single-host profile)."""
    procs = {
        "node": launch(tmp_path_factory.mktemp("node"), small_config, []),
        "masked": launch(tmp_path_factory.mktemp("masked"), small_config, ["-p", "missing_camera:=mask"],
                         compressed=True, ns="/masked", profile=True),
    }
    yield procs
    for proc, _, _ in procs.values():  # both shut down at once
        if proc.alive():
            proc.proc.send_signal(signal.SIGINT)
    codes = []
    for proc, _, _ in procs.values():
        try:
            codes.append(proc.wait(20))
        except subprocess.TimeoutExpired:
            codes.append(proc.stop())
    assert codes == [0, 0], "\n".join(p.text()[-2000:] for p, _, _ in procs.values())


@pytest.fixture(scope="module")
def node(launched: dict[str, tuple], small_config: DetectorConfig) -> Iterator[Running]:
    run = connect(*launched["node"], small_config)
    yield run
    run.peer.close()


def test_one_detection_array_per_set_equals_detect(node: Running) -> None:
    stamps = []
    for _ in range(2):
        t, msg = node.good_set()
        stamps.append(t)
        assert msg.header.frame_id == "base_link"
        assert_same_boxes(msg, node.reference_boxes(expected_frame(node.frame, camera_stamps(node.cameras, t))))
        assert len(msg.detections) > 0
    assert node.peer.wait(lambda: all(node.peer.markers_at(t) for t in stamps), 10)
    for t in stamps:
        assert len(node.peer.detections_at(t)) == 1
        mk = node.peer.markers_at(t)[0].markers
        assert mk[0].action == 3 and mk[0].header.frame_id == "base_link"
    proc = node.diag_after("processing", lambda s: int(values(s)["processed"]) >= 2)
    assert s_level(proc) == 0
    cam = node.diag_after("camera CAM_FRONT", lambda s: True)
    assert values(cam)["image_topic"] == "/cam_front/image_raw"


def s_level(status: object) -> int:
    return status.level[0] if isinstance(status.level, bytes) else int(status.level)


def test_camera_info_change_rebuilds_the_plan_once(node: Running) -> None:
    node.good_set()
    builds = int(values(node.diag_after("calibration", lambda s: True))["plan_rebuilds"])
    node.good_set()  # unchanged CameraInfo: nothing rebuilt
    assert int(values(node.diag_after("calibration", lambda s: True))["plan_rebuilds"]) == builds
    cals = list(node.frame.calibrations)
    K = cals[0].K.copy()
    K[0, 0] *= 1.5
    K[1, 1] *= 1.5
    cals[0] = CameraCalibration(cals[0].name, K, cals[0].cam_to_ego, cals[0].image_size)
    changed = Frame(node.frame.images, tuple(cals), 0)
    t, msg = node.good_set(changed)
    ref_changed = node.reference_boxes(expected_frame(changed, camera_stamps(node.cameras, t)))
    ref_old = node.reference_boxes(expected_frame(node.frame, camera_stamps(node.cameras, t)))
    assert_same_boxes(msg, ref_changed)
    assert ref_changed.shape != ref_old.shape or not np.allclose(ref_changed, ref_old), "the change must matter"
    st = node.diag_after("calibration", lambda s: int(values(s)["plan_rebuilds"]) > builds)
    assert int(values(st)["plan_rebuilds"]) == builds + 1
    node.good_set(changed)  # the same new calibration again: no further rebuild
    st = node.diag_after("calibration", lambda s: True)
    assert int(values(st)["plan_rebuilds"]) == builds + 1


def _bad(kind: str, run: Running, msgs: dict) -> None:
    img, info = msgs["CAM_BACK"]
    if kind == "encoding":
        img.encoding = "yuv422"
    elif kind == "size":
        small = sample(run.cameras, 0, seed=2).images[3][:90, :160].copy()
        img.height, img.width, img.step = 90, 160, 480
        img.data = MSGS.uint8_seq(small)
    elif kind == "nan_k":
        info.k = np.full(9, np.nan)
    elif kind == "zero_k":
        info.k = np.zeros(9)
    elif kind == "tf":
        img.header.frame_id = "nowhere_optical"
    elif kind == "truncated":
        img.data = MSGS.uint8_seq(np.frombuffer(bytes(img.data), np.uint8)[:1000])


BAD = {
    "encoding": "field encoding: 'yuv422'",
    "size": "fields width/height: image is 160x90",
    "nan_k": "field k: contains NaN",
    "zero_k": "field k: focal lengths",
    "tf": "field header.frame_id: no transform 'nowhere_optical'",
    "truncated": "field data: 1000 bytes",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_reported_and_the_node_keeps_running(node: Running, kind: str) -> None:
    t = node.stamp()
    msgs = node.peer.camera_messages(node.frame, camera_stamps(node.cameras, t))
    _bad(kind, node, msgs)
    node.peer.publish(msgs)
    st = node.diag_after("camera CAM_BACK", lambda s: BAD[kind] in s.message)
    assert s_level(st) == 2 and ("/cam_back/" in st.message)
    assert node.proc.alive()
    assert node.peer.detections_at(t) == []  # missing_camera=drop: the set is dropped


@pytest.mark.parametrize("kind", ["out_of_order", "duplicate"])
def test_out_of_order_and_duplicate_stamps(node: Running, kind: str) -> None:
    t = node.next_t  # the newest set the node has seen
    stamps = camera_stamps(node.cameras, t - SEC if kind == "out_of_order" else t)
    img, _ = node.peer.camera_messages(node.frame, stamps)["CAM_BACK"]
    node.peer.pub_img["CAM_BACK"].publish(img)
    word = "out of order" if kind == "out_of_order" else "duplicate"
    st = node.diag_after("camera CAM_BACK",
                         lambda s: "field header.stamp" in s.message and word in s.message)
    assert "/cam_back/image_raw" in st.message
    sync = node.diag_after("synchronisation", lambda s: True)
    assert int(values(sync)["out_of_order_stamps" if kind == "out_of_order" else "duplicate_stamps"]) >= 1


def test_silent_camera_drop_policy(node: Running) -> None:
    before = int(values(node.diag_after("synchronisation", lambda s: True))["dropped_missing_camera"])
    ts = []
    for _ in range(3):
        t = node.stamp()
        ts.append(t)
        node.peer.publish(node.peer.camera_messages(node.frame, camera_stamps(node.cameras, t)), skip=("CAM_BACK_LEFT",))
    st = node.diag_after("synchronisation",
                         lambda s: int(values(s)["dropped_missing_camera"]) >= before + 2)
    assert "CAM_BACK_LEFT" in values(st)["last_drop"]
    assert all(node.peer.detections_at(t) == [] for t in ts)
    assert node.proc.alive()


def test_still_processing_after_the_bad_inputs(node: Running) -> None:
    t, msg = node.good_set()
    assert_same_boxes(msg, node.reference_boxes(expected_frame(node.frame, camera_stamps(node.cameras, t))))
    assert node.proc.alive()


@pytest.fixture(scope="module")
def masked(launched: dict[str, tuple], small_config: DetectorConfig) -> Iterator[Running]:
    run = connect(*launched["masked"], small_config, compressed=True, ns="/masked")
    yield run
    run.peer.close()


def test_compressed_input_and_silent_camera_mask_policy(masked: Running) -> None:
    t, msg = masked.good_set()  # PNG over CompressedImage: decoded in the pool, lossless, so boxes equal
    assert_same_boxes(msg, masked.reference_boxes(expected_frame(masked.frame, camera_stamps(masked.cameras, t))))
    t = masked.stamp()
    stamps = camera_stamps(masked.cameras, t)
    masked.peer.publish(masked.peer.camera_messages(masked.frame, stamps), skip=("CAM_BACK",))
    # the set leaves once stream time passes the timeout: a lone anchor image 0.5 s later does that (a whole
    # next set could replace the partial one in the worker's newest-wins slot before it starts)
    later = masked.peer.camera_messages(masked.frame, camera_stamps(masked.cameras, masked.stamp()))
    masked.peer.pub_img["CAM_FRONT"].publish(later["CAM_FRONT"][0])
    assert masked.peer.wait(lambda: masked.peer.detections_at(t) != [], 30), masked.proc.text()[-2000:]
    msg = masked.peer.detections_at(t)[0]
    valid = tuple(c != "CAM_BACK" for c in masked.cameras)
    assert_same_boxes(msg, masked.reference_boxes(expected_frame(masked.frame, stamps, valid)))
    st = masked.diag_after("synchronisation", lambda s: int(values(s)["partial_sets"]) >= 1)
    assert "partial" in st.message
