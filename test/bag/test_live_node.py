"""Live-node replay: a converted bag played into a running detector_node (a real process over DDS on loopback,
use_sim_time with /clock from the bag) through rclpy publishers of the bag's own CDR bytes; the node's
Detection3DArrays equal `bag replay`'s output for the same sets. test/conftest.py keeps DDS on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID of the session) and the node inherits it."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ros_harness import MSGS, PARAMS_FILE, NodeProcess
from simdistill_ros.bag.bagio import BagReader
from simdistill_ros.bag.replay import DETECTIONS_TOPIC, replay
from simdistill_ros.bag.settings import default_params_file, replay_params
from simdistill_ros.core.detector import Detector
from simdistill_ros.ros.convert import detection_array_to_boxes, stamp_to_ns

pytestmark = pytest.mark.timeout(240)
MAX_DET, THRESHOLD = 40, 0.2
NODE_TOPICS = ("/tf", "/tf_static")


class Player:
    """Publishers for the topics the node subscribes to (raw CDR bytes from the bag), /clock, and a recorder of
    the node's detections."""

    def __init__(self, topics: dict[str, str]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node("simdistill_bag_player", context=self.ctx)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {t: self.node.create_publisher(MSGS.cls(m), t, latched if t == "/tf_static" else reliable)
                     for t, m in topics.items()}
        self.clock = self.node.create_publisher(MSGS.cls("rosgraph_msgs/msg/Clock"), "/clock", reliable)
        self.lock = threading.Lock()
        self.detections: list[Any] = []
        self.diagnostics: list[Any] = []
        self.node.create_subscription(MSGS.cls("vision_msgs/msg/Detection3DArray"), DETECTIONS_TOPIC,
                                      lambda m: self._keep(self.detections, m), reliable)
        self.node.create_subscription(MSGS.cls("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                                      lambda m: self._keep(self.diagnostics, m), reliable)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                return

    def _keep(self, store: list[Any], msg: Any) -> None:
        with self.lock:
            store.append(msg)

    def tick(self, stamp_ns: int) -> None:
        self.clock.publish(MSGS("rosgraph_msgs/msg/Clock", clock=MSGS.time(stamp_ns)))

    def wait(self, pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.ctx.try_shutdown()
        self.thread.join(5.0)


def test_node_fed_from_the_bag_equals_bag_replay(raw_bag: Path, checkpoint: Path, tmp_path: Path) -> None:
    args = ["--ros-args", "--params-file", str(PARAMS_FILE), "-p", f"model:={checkpoint}",
            "-p", f"max_detections:={MAX_DET}", "-p", f"score_threshold:={THRESHOLD}", "-p", "torch_threads:=1",
            "-p", "reliable:=true", "-p", "motion_frame:=map", "-p", "use_sim_time:=true",
            "-p", "diagnostics_period:=0.25"]
    proc = NodeProcess(args, tmp_path / "node.log")
    # meanwhile, the reference: bag replay with the same parameters
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = replay_params(default_params_file(), checkpoint, {"motion_frame": "map", "max_detections": MAX_DET,
                                                                   "score_threshold": THRESHOLD})
        detector = Detector.from_checkpoint(checkpoint, score_threshold=THRESHOLD, max_detections=MAX_DET)
        replay(raw_bag, params, detector, tmp_path / "replayed", progress=False)
    finally:
        torch.set_num_threads(threads)
    with BagReader(tmp_path / "replayed") as r:
        expected = {m.log_ns: m.msg for m in r.messages({DETECTIONS_TOPIC})}
    with BagReader(raw_bag) as r:
        node_topics = {t: m for t, m in r.topics.items() if t in NODE_TOPICS or t.startswith("/cam_")}
        messages = list(r.messages(set(node_topics)))
    assert len(expected) == 4
    player = Player(node_topics)
    try:
        deadline = time.monotonic() + 120
        while not (player.node.count_publishers(DETECTIONS_TOPIC)
                   and all(p.get_subscription_count() for p in player.pubs.values())):
            assert proc.alive(), proc.text()[-3000:]
            assert time.monotonic() < deadline, f"the node did not connect:\n{proc.text()[-3000:]}"
            time.sleep(0.1)
        anchors = sorted(expected)
        bounds = [a - 100_000_000 for a in anchors[1:]] + [2**63 - 1]  # a set's messages: up to 0.1 s before the next
        i = 0
        for anchor, bound in zip(anchors, bounds):
            group = []
            while i < len(messages) and messages[i].log_ns < bound:
                group.append(messages[i])
                i += 1
            images = [m for m in group if "/image_raw" in m.topic]
            for m in (m for m in group if "/image_raw" not in m.topic):  # TF and CameraInfo first
                player.tick(m.log_ns)
                player.pubs[m.topic].publish(m.raw)
            time.sleep(0.1)
            for m in images:
                player.tick(m.log_ns)
                player.pubs[m.topic].publish(m.raw)
            assert player.wait(lambda a=anchor: any(stamp_to_ns(d.header.stamp) == a for d in player.detections), 60), \
                f"no detections for the set at {anchor}:\n{proc.text()[-3000:]}"
        end = messages[-1].log_ns + 1_000_000_000
        player.tick(end)
        assert player.wait(lambda: any(anchors[0] <= stamp_to_ns(d.header.stamp) <= end for d in player.diagnostics),
                           10), "no /diagnostics stamped in the bag's time: the node does not run on /clock"
        got = {stamp_to_ns(d.header.stamp): d for d in player.detections}
        assert sorted(got) == anchors and len(player.detections) == len(anchors)
        for stamp in anchors:
            mine, ref = got[stamp], expected[stamp]
            assert mine.header.frame_id == ref.header.frame_id == "base_link"
            b_node, s_node, n_node = detection_array_to_boxes(mine)
            b_ref, s_ref, n_ref = detection_array_to_boxes(ref)
            assert n_node == n_ref and len(n_ref) > 0
            np.testing.assert_allclose(b_node[:, :6], b_ref[:, :6], atol=1e-4)
            np.testing.assert_allclose(np.angle(np.exp(1j * (b_node[:, 6] - b_ref[:, 6]))), 0.0, atol=1e-4)
            np.testing.assert_allclose(s_node, s_ref, atol=1e-5)
    finally:
        player.close()
        code = proc.stop()
    assert code == 0, proc.text()[-3000:]
