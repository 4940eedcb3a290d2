"""ros/frame_builder: distorted cameras undistorted with maps built once per calibration (checked against
OpenCV's forward distortion model, cv2.projectPoints) or refused; TF and CameraInfo problems named."""
from __future__ import annotations

import numpy as np
import pytest

from simdistill_ros.core.sync import CameraSet
from simdistill_ros.core.tf_buffer import TransformBuffer
from simdistill_ros.ros.convert import MessageFactory, intrinsics_to_camera_info, rgb_to_image
from simdistill_ros.ros.frame_builder import CameraInput, FrameBuilder

H, W = 120, 160
K = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 60.0], [0.0, 0.0, 1.0]])
D = np.array([-0.3, 0.08, 0.0, 0.0, 0.0])


def one_camera(f: MessageFactory, distorted: str, rgb: np.ndarray, frame_id: str = "cam_optical") -> tuple:
    tf = TransformBuffer()
    tf.set_matrix("base_link", "cam_optical", 0, np.eye(4), static=True)
    cam = CameraInput("CAM", "/cam/image_raw", "/cam/camera_info")
    builder = FrameBuilder([cam], "base_link", tf, compressed=False, distorted=distorted)
    builder.set_camera_info("CAM", intrinsics_to_camera_info(f, K, (H, W), 5, "cam_optical", D=D))
    cset = CameraSet(5, ("CAM",), (rgb_to_image(f, rgb, 5, frame_id),), (5,))
    return builder, cset


def test_undistortion_moves_a_point_to_its_pinhole_projection(rclpy_factory: MessageFactory) -> None:
    import cv2

    rng = np.random.default_rng()
    for _ in range(3):
        # a 3D point off-centre, its distorted pixel (OpenCV's forward model) gets a bright dot
        sx, sy = rng.choice([-1.0, 1.0], 2)
        p = np.array([[sx * rng.uniform(0.4, 0.65), sy * rng.uniform(0.25, 0.45), 1.0]])  # far out: strong distortion
        distorted_px = cv2.projectPoints(p, np.zeros(3), np.zeros(3), K, D)[0].reshape(2)
        pinhole_px = (K @ p[0])[:2] / p[0, 2]
        img = np.zeros((H, W, 3), np.uint8)
        cv2.circle(img, tuple(int(round(v)) for v in distorted_px), 2, (255, 255, 255), -1)
        builder, cset = one_camera(rclpy_factory, "undistort", img)
        out = builder.build(cset)
        assert out.problems == {} and out.frame is not None
        und = out.frame.images[0][:, :, 0].astype(float)
        ys, xs = np.nonzero(und > 60)
        centroid = np.array([(xs * und[ys, xs]).sum(), (ys * und[ys, xs]).sum()]) / und[ys, xs].sum()
        assert np.abs(centroid - pinhole_px).max() < 1.0, (centroid, pinhole_px, distorted_px)
        assert np.abs(distorted_px - pinhole_px).max() > 2.0  # the test would notice a missing undistortion


def test_maps_built_once_per_calibration(rclpy_factory: MessageFactory) -> None:
    img = np.random.default_rng().integers(0, 256, (H, W, 3), dtype=np.uint8)
    builder, cset = one_camera(rclpy_factory, "undistort", img)
    builder.build(cset)
    first = builder._undistorters["CAM"][1]
    builder.build(cset)
    assert builder._undistorters["CAM"][1] is first
    builder.set_camera_info("CAM", intrinsics_to_camera_info(rclpy_factory, K, (H, W), 6, "cam_optical", D=D * 0.5))
    builder.build(cset)
    assert builder._undistorters["CAM"][1] is not first


def test_refuse_policy_and_missing_tf_are_named(rclpy_factory: MessageFactory) -> None:
    img = np.zeros((H, W, 3), np.uint8)
    builder, cset = one_camera(rclpy_factory, "refuse", img)
    out = builder.build(cset)
    assert out.frame is None and "topic /cam/camera_info field d" in out.problems["CAM"]
    builder, cset = one_camera(rclpy_factory, "undistort", img, frame_id="elsewhere")
    out = builder.build(cset)
    assert out.frame is None and "field header.frame_id: no transform 'elsewhere'" in out.problems["CAM"]
    with pytest.raises(ValueError, match="distorted"):
        FrameBuilder([], "base_link", TransformBuffer(), compressed=False, distorted="ignore")
