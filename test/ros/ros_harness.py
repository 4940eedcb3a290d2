"""Helpers of the ROS process tests: a tiny checkpoint, synthetic six-camera sets, the node as a process,
and a peer node in the test process that publishes camera topics and /tf_static and records the node's
outputs. DDS stays on loopback: test/conftest.py sets ROS_AUTOMATIC_DISCOVERY_RANGE and ROS_DOMAIN_ID
before rclpy is imported, and the node process inherits them."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from simdistill_ros.core.checkpoint import save_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.model.student import Student
from simdistill_ros.core.rig import random_frame
from simdistill_ros.core.types import Frame
from simdistill_ros.ros.bag_player import SpinningNode
from simdistill_ros.ros.convert import (MessageFactory, intrinsics_to_camera_info, matrix_to_transform,
                                        python_module_lookup, rgb_to_image, stamp_to_ns)

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "detector.param.yaml"
PROFILE = REPO / "config" / "fastdds_single_host.xml"
IMAGE_SIZE = (180, 320)
NODE = "/detector_node"
MSGS = MessageFactory(python_module_lookup)


def make_checkpoint(path: Path, config: DetectorConfig) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, Student(config.model, config.geometry).state_dict(), config)


def sample(names: tuple[str, ...], stamp_ns: int, seed: int | None = None) -> Frame:
    return random_frame(names, seed=seed, stamp_ns=stamp_ns, image_size=IMAGE_SIZE)


def optical_frame(camera: str) -> str:
    return f"{camera.lower()}_optical"


def topic(camera: str, kind: str, ns: str = "") -> str:
    return f"{ns}/{camera.lower()}/{kind}"


def node_command() -> list[str]:
    """The installed console script (pip's entry point in the venv)."""
    return [str(Path(sys.executable).with_name("detector_node"))]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so no node outlives a killed run."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """detector_node as a child process; its output goes to a log file."""

    def __init__(self, args: list[str], log: Path, command: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen((command or node_command()) + args, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


def run_node_expecting_failure(args: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Start the node with args; returns (exit code, output)."""
    out = subprocess.run(node_command() + args, capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


class Peer:
    """The test's side of DDS: camera publishers, /tf_static, and recorders of the node's outputs."""

    def __init__(self, cameras: tuple[str, ...], compressed: bool = False, ns: str = "") -> None:
        """ns: the node's namespace ("" or "/name"): its camera topics and outputs live under it."""
        node = f"{ns}{NODE}"
        self.output_topic = f"{node}/detections"
        self.cameras = cameras
        self.compressed = compressed
        self.spinner = SpinningNode("simdistill_test_peer", thread_name="test-peer")
        self.node = self.spinner.node
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        img_type = MSGS.cls("sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
        suffix = "image_raw/compressed" if compressed else "image_raw"
        self.pub_img = {c: self.node.create_publisher(img_type, topic(c, suffix, ns), qos) for c in cameras}
        self.pub_info = {c: self.node.create_publisher(MSGS.cls("sensor_msgs/msg/CameraInfo"), topic(c, "camera_info", ns), qos)
                         for c in cameras}
        tf_type = MSGS.cls("tf2_msgs/msg/TFMessage")
        self.pub_static = self.node.create_publisher(
            tf_type, "/tf_static", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                              durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.lock = threading.RLock()
        self.detections: list[Any] = []
        self.markers: list[Any] = []
        self.diagnostics: list[Any] = []
        self.node.create_subscription(MSGS.cls("vision_msgs/msg/Detection3DArray"), f"{node}/detections",
                                      lambda m: self._keep(self.detections, m), qos)
        self.node.create_subscription(MSGS.cls("visualization_msgs/msg/MarkerArray"), f"{node}/markers",
                                      lambda m: self._keep(self.markers, m), qos)
        self.node.create_subscription(MSGS.cls("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                                      lambda m: self._keep(self.diagnostics, m), qos)
        self.spinner.start()

    def _keep(self, store: list[Any], msg: Any) -> None:
        with self.lock:
            store.append(msg)

    def close(self) -> None:
        self.spinner.close()

    def wait_connected(self, proc: NodeProcess, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AssertionError(f"the node exited with {proc.proc.returncode}:\n{proc.text()[-3000:]}")
            pubs = self.node.count_publishers(self.output_topic)
            if pubs and all(p.get_subscription_count() for p in self.pub_img.values()) \
                    and all(p.get_subscription_count() for p in self.pub_info.values()):
                return
            time.sleep(0.1)
        raise AssertionError(f"the node did not connect in {timeout} s:\n{proc.text()[-3000:]}")

    def publish_static_tf(self, frame: Frame) -> None:
        tfs = [matrix_to_transform(MSGS, c.cam_to_ego, "base_link", optical_frame(c.name), 0) for c in frame.calibrations]
        self.pub_static.publish(MSGS("tf2_msgs/msg/TFMessage", transforms=tfs))

    def camera_messages(self, frame: Frame, stamps: dict[str, int]) -> dict[str, tuple[Any, Any]]:
        """(image, camera_info) per camera of the frame, stamped per camera."""
        out = {}
        for img, cal in zip(frame.images, frame.calibrations):
            t, fid = stamps[cal.name], optical_frame(cal.name)
            if self.compressed:
                from PIL import Image as PILImage

                buf = io.BytesIO()
                PILImage.fromarray(img).save(buf, format="PNG")
                im = MSGS("sensor_msgs/msg/CompressedImage", header=MSGS.header(t, fid), format="png",
                          data=MSGS.uint8_seq(b""))
                im.data = MSGS.uint8_seq(buf.getvalue())
            else:
                im = rgb_to_image(MSGS, img, t, fid)
            out[cal.name] = (im, intrinsics_to_camera_info(MSGS, cal.K, cal.image_size, t, fid))
        return out

    def publish(self, msgs: dict[str, tuple[Any, Any]], skip: tuple[str, ...] = ()) -> None:
        for cam, (img, info) in msgs.items():
            if cam in skip:
                continue
            self.pub_info[cam].publish(info)
        time.sleep(0.02)
        for cam, (img, info) in msgs.items():
            if cam not in skip:
                self.pub_img[cam].publish(img)

    def wait(self, pred: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.02)
        with self.lock:
            return pred()

    def detections_at(self, stamp_ns: int) -> list[Any]:
        with self.lock:
            return [m for m in self.detections if stamp_to_ns(m.header.stamp) == stamp_ns]

    def markers_at(self, stamp_ns: int) -> list[Any]:
        with self.lock:
            return [m for m in self.markers if m.markers and stamp_to_ns(m.markers[0].header.stamp) == stamp_ns]

    def status(self, name: str, since: int = 0) -> list[Any]:
        """Every received DiagnosticStatus called `name` (newest last), from message index `since` on."""
        with self.lock:
            return [s for m in self.diagnostics[since:] for s in m.status if s.name == name]

    def diag_count(self) -> int:
        with self.lock:
            return len(self.diagnostics)


def values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def camera_stamps(cameras: tuple[str, ...], t_ns: int) -> dict[str, int]:
    """nuScenes-like firing: 5 ms apart, the anchor (first camera) first."""
    return {c: t_ns + 5_000_000 * i for i, c in enumerate(cameras)}


def expected_frame(frame: Frame, stamps: dict[str, int], valid: tuple[bool, ...] | None = None) -> Frame:
    return Frame(frame.images, frame.calibrations, stamps[frame.calibrations[0].name], valid=valid)


def env_with(**kw: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(kw)
    return env


def boxes_of(msg: Any) -> np.ndarray:
    from simdistill_ros.ros.convert import detection_array_to_boxes

    boxes, scores, _ = detection_array_to_boxes(msg)
    return np.concatenate([boxes, scores[:, None]], axis=1)
