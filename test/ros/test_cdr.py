"""ros/cdr writes what rclpy's serializer writes for the field-built messages: the same length, and the
same message when rclpy deserializes both (Fast DDS leaves padding bytes undefined, so raw bytes differ
there); rosbags decodes them to the same boxes."""
from __future__ import annotations

import numpy as np
import pytest

from test_convert import check_array, random_detections

from simdistill_ros.core.types import Detections
from simdistill_ros.ros.cdr import detection_array_cdr, marker_array_cdr
from simdistill_ros.ros.convert import MessageFactory, detections_to_msg
from simdistill_ros.ros.markers import detections_to_markers


@pytest.mark.parametrize("n", [0, 1, 7])
def test_bytes_equal_rclpy_serializer(rclpy_factory: MessageFactory, typestore, n: int) -> None:  # noqa: ANN001
    from rclpy.serialization import deserialize_message, serialize_message

    def same(ours: bytes, msg: object) -> None:
        ref = serialize_message(msg)
        assert len(ours) == len(ref)
        assert deserialize_message(ours, type(msg)) == deserialize_message(ref, type(msg))

    rng = np.random.default_rng()
    det = random_detections(n, rng)
    if n:
        boxes = det.boxes.copy()
        boxes[0, 7:9] = 0.0  # a parked one: no arrow marker
        det = Detections(boxes, det.scores, det.labels, det.class_names, stamp_ns=det.stamp_ns)
    for frame_id in ("base_link", "ego_vehicle_frame"):  # string lengths shift the alignment
        ours = detection_array_cdr(det, frame_id)
        same(ours, detections_to_msg(rclpy_factory, det, frame_id))
        if frame_id == "base_link":
            check_array(typestore.deserialize_cdr(ours, "vision_msgs/msg/Detection3DArray"), det)
        for life in (1_000_000_000, 250_000_000):
            same(marker_array_cdr(det, frame_id, life), detections_to_markers(rclpy_factory, det, frame_id, life))
