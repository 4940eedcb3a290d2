"""Live-node replay: a converted bag played into a running detector_node (a real process over DDS on loopback,
use_sim_time with /clock from the bag) through rclpy publishers of the bag's own CDR bytes
(ros/bag_player.py); the node's Detection3DArrays equal `bag replay`'s output for the same sets.
test/conftest.py keeps DDS on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID of the
session) and the node inherits it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ros_harness import MSGS, PARAMS_FILE, NodeProcess
from simdistill_ros.bag.bagio import BagReader
from simdistill_ros.bag.replay import DETECTIONS_TOPIC, replay
from simdistill_ros.bag.settings import default_params_file, replay_params
from simdistill_ros.core.detector import Detector
from simdistill_ros.ros.bag_player import BagPlayer, PlayedMessage
from simdistill_ros.ros.convert import detection_array_to_boxes, stamp_to_ns

pytestmark = pytest.mark.timeout(240)
MAX_DET, THRESHOLD = 40, 0.2


def test_node_fed_from_the_bag_equals_bag_replay(raw_bag: Path, checkpoint: Path, tmp_path: Path) -> None:
    from rclpy.serialization import deserialize_message

    args = ["--ros-args", "--params-file", str(PARAMS_FILE), "-p", f"model:={checkpoint}",
            "-p", f"max_detections:={MAX_DET}", "-p", f"score_threshold:={THRESHOLD}", "-p", "torch_threads:=1",
            "-p", "reliable:=true", "-p", "motion_frame:=map", "-p", "use_sim_time:=true",
            "-p", "diagnostics_period:=0.25"]
    proc = NodeProcess(args, tmp_path / "node.log")
    import torch  # meanwhile, the reference: bag replay with the same parameters

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
        topics = {t: m for t, m in r.topics.items() if t in ("/tf", "/tf_static") or t.startswith("/cam_")}
        messages = [PlayedMessage(m.topic, m.log_ns, m.raw) for m in r.messages(set(topics))]
    assert len(expected) == 4
    player = BagPlayer(topics, DETECTIONS_TOPIC)
    try:
        player.wait_connected(proc.alive, 120)
        anchors = sorted(expected)
        recorded = player.play_sets(messages, anchors, alive=proc.alive)
        assert all(recorded.latency_s[a] is not None for a in anchors), proc.text()[-3000:]
        end = messages[-1].log_ns + 1_000_000_000
        assert player.wait(lambda: any(anchors[0] <= t <= end for t in recorded.diagnostics_stamps_ns), 10), \
            "no /diagnostics stamped in the bag's time: the node does not run on /clock"
        assert sorted(recorded.detections) == anchors
        for stamp in anchors:
            mine = deserialize_message(recorded.detections[stamp], MSGS.cls("vision_msgs/msg/Detection3DArray"))
            ref = expected[stamp]
            assert stamp_to_ns(mine.header.stamp) == stamp
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
