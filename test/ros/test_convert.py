"""ros/convert and ros/markers with rclpy's and rosbags' message classes; CDR bytes of one family decoded by
the other (rclpy.serialization against rosbags' serializer); PIL and shapely as independent references."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from simdistill_ros.core.tf_buffer import TransformBuffer
from simdistill_ros.core.types import Detections
from simdistill_ros.ros.convert import (ConversionError, MessageFactory, camera_info_to_intrinsics,
                                        compressed_to_rgb, detection_array_to_boxes, detections_to_msg,
                                        image_to_rgb, intrinsics_to_camera_info, matrix_to_transform, rgb_to_image,
                                        stamp_to_ns, tf_message_into, transform_to_matrix)
from simdistill_ros.ros.markers import DELETEALL, EDGES, LINE_LIST, TEXT_VIEW_FACING, box_corners, detections_to_markers

CLASSES = ("car", "truck", "pedestrian")


def raw_image(f: MessageFactory, rgb: np.ndarray, encoding: str, pad: int, rng: np.random.Generator) -> object:
    """An Image message built byte by byte (naive loops over channels), with `pad` garbage bytes per row."""
    h, w = rgb.shape[:2]
    if encoding == "mono8":
        pix = rgb[:, :, :1]
    else:
        order = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2, 3], "bgra8": [2, 1, 0, 3]}[encoding]
        rgba = np.concatenate([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
        pix = np.stack([rgba[:, :, c] for c in order], axis=2)
    rows = pix.reshape(h, -1)
    padded = np.concatenate([rows, rng.integers(0, 256, (h, pad), dtype=np.uint8)], axis=1)
    return f("sensor_msgs/msg/Image", header=f.header(5, "cam"), height=h, width=w, encoding=encoding, is_bigendian=0,
             step=rows.shape[1] + pad, data=f.uint8_seq(padded))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_image_encodings_and_row_padding(factory: MessageFactory, encoding: str, pad: int) -> None:
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[:] = rgb[:, :, :1]
    out = image_to_rgb(raw_image(factory, rgb, encoding, pad, rng))
    assert out.shape == (7, 11, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_image_errors_name_the_field(factory: MessageFactory) -> None:
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = rgb_to_image(factory, rgb, 1, "cam")
    msg.encoding = "yuv422"
    with pytest.raises(ConversionError, match=r"topic /x field encoding: 'yuv422'"):
        image_to_rgb(msg, "topic /x")
    msg = rgb_to_image(factory, rgb, 1, "cam")
    msg.data = factory.uint8_seq(np.zeros(4 * 18 - 1, np.uint8))
    with pytest.raises(ConversionError, match="field data: 71 bytes.*truncated"):
        image_to_rgb(msg)
    msg = rgb_to_image(factory, rgb, 1, "cam")
    msg.step = 10
    with pytest.raises(ConversionError, match="field step"):
        image_to_rgb(msg)


def test_rgb_to_image_round_trip_and_stamp(factory: MessageFactory) -> None:
    rgb = np.random.default_rng().integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8"):
        msg = rgb_to_image(factory, rgb, 1_532_402_927_647_951_000, "cam_front", enc)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_532_402_927, 647_951_000)
        assert stamp_to_ns(msg.header.stamp) == 1_532_402_927_647_951_000 and msg.encoding == enc
        np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_compressed_png_exact_and_jpeg_against_pil(factory: MessageFactory) -> None:
    from PIL import Image as PILImage

    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for fmt in ("png", "jpeg"):
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format=fmt.upper(), quality=95) if fmt == "jpeg" else \
            PILImage.fromarray(rgb).save(buf, format="PNG")
        msg = factory("sensor_msgs/msg/CompressedImage", header=factory.header(0, "cam"), format=fmt,
                      data=factory.uint8_seq(buf.getvalue()))
        out = compressed_to_rgb(msg)
        ref = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert out.shape == rgb.shape
        if fmt == "png":
            np.testing.assert_array_equal(out, rgb)
        else:  # two JPEG decoders agree to a few grey levels
            assert np.abs(out.astype(int) - ref.astype(int)).max() <= 3
    bad = factory("sensor_msgs/msg/CompressedImage", header=factory.header(0, "cam"), format="jpeg",
                  data=factory.uint8_seq(buf.getvalue()[:50]))
    with pytest.raises(ConversionError, match="field data"):
        compressed_to_rgb(bad)
    bad.format = "tiff"
    with pytest.raises(ConversionError, match="field format"):
        compressed_to_rgb(bad)


def test_camera_info_round_trip_rectified_and_errors(factory: MessageFactory) -> None:
    K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
    msg = intrinsics_to_camera_info(factory, K, (900, 1600), 7, "cam_front", D=np.array([-0.1, 0.01, 0, 0, 0]))
    intr = camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(intr.K, K)
    assert intr.image_size == (900, 1600) and intr.distorted and intr.distortion_model == "plumb_bob"
    rect = camera_info_to_intrinsics(msg, use_rectified=True)  # K from P, no distortion
    np.testing.assert_array_equal(rect.K, K)
    assert not rect.distorted
    for bad_k, pattern in ((np.zeros(9), "field k: focal lengths"), (np.full(9, np.nan), "field k: contains NaN")):
        msg.k = bad_k
        with pytest.raises(ConversionError, match=pattern):
            camera_info_to_intrinsics(msg, where="topic cam/camera_info")
    msg = intrinsics_to_camera_info(factory, K, (900, 1600), 7, "cam_front")
    msg.width = 0
    with pytest.raises(ConversionError, match="height/width"):
        camera_info_to_intrinsics(msg)


def test_transform_round_trip_and_tf_message_into_buffer(factory: MessageFactory) -> None:
    from pyquaternion import Quaternion

    rng = np.random.default_rng()
    T = np.eye(4)
    T[:3, :3] = Quaternion(*rng.normal(size=4)).normalised.rotation_matrix
    T[:3, 3] = rng.normal(size=3)
    ts = matrix_to_transform(factory, T, "base_link", "cam_front_optical", 42)
    parent, child, stamp, back = transform_to_matrix(ts)
    assert (parent, child, stamp) == ("base_link", "cam_front_optical", 42)
    np.testing.assert_allclose(back, T, atol=1e-12)
    bad = matrix_to_transform(factory, np.eye(4), "base_link", "base_link", 0)
    msg = factory("tf2_msgs/msg/TFMessage", transforms=[ts, bad])
    buf = TransformBuffer()
    errors = tf_message_into(buf, msg, static=True)
    assert len(errors) == 1 and "transforms[1]" in errors[0] and "own parent" in errors[0]
    np.testing.assert_allclose(buf.lookup("base_link", "cam_front_optical"), T, atol=1e-12)


def random_detections(n: int, rng: np.random.Generator) -> Detections:
    boxes = np.concatenate([rng.uniform(-40, 40, (n, 3)), rng.uniform(0.5, 5, (n, 3)),
                            rng.uniform(-math.pi, math.pi, (n, 1)), rng.uniform(-3, 3, (n, 2))], axis=1)
    return Detections(boxes, rng.uniform(0, 1, n), rng.integers(0, len(CLASSES), n), CLASSES,
                      stamp_ns=1_532_402_927_647_951_000)


def check_array(msg: object, det: Detections) -> None:
    assert stamp_to_ns(msg.header.stamp) == det.stamp_ns and msg.header.frame_id == "base_link"
    boxes, scores, names = detection_array_to_boxes(msg)
    np.testing.assert_allclose(boxes[:, :6], det.boxes[:, :6], atol=1e-5)
    dyaw = np.angle(np.exp(1j * (boxes[:, 6] - det.boxes[:, 6])))
    np.testing.assert_allclose(dyaw, 0.0, atol=1e-5)
    np.testing.assert_allclose(scores, det.scores, atol=1e-6)
    assert names == det.names


def test_detections_to_msg_both_families(factory: MessageFactory) -> None:
    det = random_detections(6, np.random.default_rng())
    msg = detections_to_msg(factory, det, "base_link")
    check_array(msg, det)
    d0 = msg.detections[0]
    assert d0.header.frame_id == "base_link" and len(d0.results) == 1
    assert d0.results[0].pose.pose.position.x == d0.bbox.center.position.x
    empty = detections_to_msg(factory, random_detections(0, np.random.default_rng()), "base_link")
    assert len(empty.detections) == 0


def test_cdr_bytes_cross_decode(rclpy_factory: MessageFactory, rosbags_factory: MessageFactory, typestore) -> None:  # noqa: ANN001
    from rclpy.serialization import deserialize_message, serialize_message

    rng = np.random.default_rng()
    det = random_detections(4, rng)
    name = "vision_msgs/msg/Detection3DArray"
    # rclpy -> CDR -> rosbags
    raw = serialize_message(detections_to_msg(rclpy_factory, det, "base_link"))
    check_array(typestore.deserialize_cdr(raw, name), det)
    # rosbags -> CDR -> rclpy
    raw = typestore.serialize_cdr(detections_to_msg(rosbags_factory, det, "base_link"), name)
    check_array(deserialize_message(bytes(raw), rclpy_factory.cls(name)), det)
    # an image, a camera info, a TF message and markers, both ways
    rgb = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    for build, read in ((rclpy_factory, "rosbags"), (rosbags_factory, "rclpy")):
        msgs = {
            "sensor_msgs/msg/Image": rgb_to_image(build, rgb, 3, "cam", "bgr8"),
            "sensor_msgs/msg/CameraInfo": intrinsics_to_camera_info(build, np.diag([100.0, 100.0, 1.0]), (5, 8), 3, "cam"),
            "tf2_msgs/msg/TFMessage": build("tf2_msgs/msg/TFMessage",
                                            transforms=[matrix_to_transform(build, np.eye(4), "a", "b", 3)]),
            "visualization_msgs/msg/MarkerArray": detections_to_markers(build, det, "base_link"),
        }
        for tname, m in msgs.items():
            if read == "rosbags":
                back = typestore.deserialize_cdr(serialize_message(m), tname)
            else:
                back = deserialize_message(bytes(typestore.serialize_cdr(m, tname)), rclpy_factory.cls(tname))
            if tname == "sensor_msgs/msg/Image":
                np.testing.assert_array_equal(image_to_rgb(back), rgb)
            elif tname == "sensor_msgs/msg/CameraInfo":
                np.testing.assert_array_equal(camera_info_to_intrinsics(back).K, np.diag([100.0, 100.0, 1.0]))
            elif tname == "tf2_msgs/msg/TFMessage":
                assert transform_to_matrix(back.transforms[0])[:3] == ("a", "b", 3)
            else:
                assert len(back.markers) == len(m.markers) and back.markers[1].points[3].x == m.markers[1].points[3].x


def test_markers_boxes_labels_and_velocity(factory: MessageFactory) -> None:
    from shapely.affinity import rotate, translate
    from shapely.geometry import Polygon, box

    rng = np.random.default_rng()
    det = random_detections(5, rng)
    boxes = det.boxes.copy()
    boxes[0, 7:9] = 0.0  # one parked object: no arrow
    det = Detections(boxes, det.scores, det.labels, det.class_names, stamp_ns=det.stamp_ns)
    ms = detections_to_markers(factory, det, "base_link", lifetime_ns=1_500_000_000).markers
    moving = np.hypot(boxes[:, 7], boxes[:, 8]) > 0.2
    assert ms[0].action == DELETEALL and len(ms) == 3 + len(det)
    assert len({m.id for m in ms}) == len(ms)
    outlines, arrows, texts = ms[1], ms[2], ms[3:]
    assert outlines.type == arrows.type == LINE_LIST and all(m.type == TEXT_VIEW_FACING for m in texts)
    assert texts[2].text == f"{det.names[2]} {det.scores[2]:.2f}"
    assert outlines.lifetime.sec == 1 and outlines.lifetime.nanosec == 500_000_000
    pts = np.array([[p.x, p.y, p.z] for p in outlines.points]).reshape(len(det), 2 * len(EDGES), 3)
    assert len(outlines.colors) == len(outlines.points)
    corners = box_corners(boxes)
    for i, b in enumerate(boxes):
        np.testing.assert_allclose(pts[i], corners[i][np.asarray(EDGES).reshape(-1)])
        ref = translate(rotate(box(-b[3] / 2, -b[4] / 2, b[3] / 2, b[4] / 2), b[6], origin=(0, 0), use_radians=True),
                        b[0], b[1])
        ours = Polygon(corners[i, :4, :2])
        assert ours.is_valid and ours.symmetric_difference(ref).area < 1e-6
        np.testing.assert_allclose(corners[i, :4, 2], b[2] - b[5] / 2)
        np.testing.assert_allclose(corners[i, 4:, 2], b[2] + b[5] / 2)
    heads = np.array([[p.x, p.y, p.z] for p in arrows.points]).reshape(-1, 6, 3)
    assert len(heads) == moving.sum()
    np.testing.assert_allclose(heads[:, 0, :2], boxes[moving, :2], atol=1e-9)
    np.testing.assert_allclose(heads[:, 1, :2] - heads[:, 0, :2], boxes[moving, 7:9], atol=1e-9)
