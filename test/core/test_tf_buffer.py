"""core/tf_buffer and the quaternion helpers of core/frames, against hand-computed chains and pyquaternion."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyquaternion import Quaternion

from simdistill_ros.core.frames import matrix_to_quaternion, quaternion_to_matrix, slerp, yaw_quaternion
from simdistill_ros.core.tf_buffer import (ConnectivityError, ExtrapolationError, TransformBuffer, UnknownFrameError,
                                           camera_to_target)


def rigid(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(yaw_quaternion(yaw))
    T[:3, 3] = t
    return T


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    return Quaternion(*rng.normal(size=4)).normalised.rotation_matrix


def test_quaternions_match_pyquaternion() -> None:
    rng = np.random.default_rng()
    for _ in range(50):
        q = Quaternion(*rng.normal(size=4)).normalised
        xyzw = np.array([q.x, q.y, q.z, q.w])
        np.testing.assert_allclose(quaternion_to_matrix(xyzw), q.rotation_matrix, atol=1e-12)
        back = matrix_to_quaternion(q.rotation_matrix)
        assert back[3] >= 0
        assert min(np.abs(back - xyzw).max(), np.abs(back + xyzw).max()) < 1e-9
    for angle in (0.0, math.pi, -math.pi / 2, 3.0):  # edge cases of Shepperd's branches, 180 degrees included
        for axis in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]):
            R = Quaternion(axis=axis, angle=angle).rotation_matrix
            np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


def test_slerp_matches_pyquaternion() -> None:
    rng = np.random.default_rng()
    for _ in range(20):
        q0, q1 = (Quaternion(*rng.normal(size=4)).normalised for _ in range(2))
        a = float(rng.uniform())
        ref = Quaternion.slerp(q0, q1, a)
        ours = slerp(np.array([q0.x, q0.y, q0.z, q0.w]), np.array([q1.x, q1.y, q1.z, q1.w]), a)
        np.testing.assert_allclose(quaternion_to_matrix(ours), ref.rotation_matrix, atol=1e-9)


def test_chain_composed_through_common_ancestor() -> None:
    rng = np.random.default_rng()
    buf = TransformBuffer()
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = random_rotation(rng)
    T_base_cam[:3, 3] = rng.normal(size=3)
    T_base_lidar = rigid(0.3, (1.0, 0.0, 1.8))
    T_map_base = rigid(1.2, (100.0, -5.0, 0.0))
    buf.set_matrix("base_link", "cam", 0, T_base_cam, static=True)
    buf.set_matrix("base_link", "lidar", 0, T_base_lidar, static=True)
    buf.set_matrix("map", "base_link", 5, T_map_base)
    np.testing.assert_allclose(buf.lookup("base_link", "cam"), T_base_cam, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "base_link"), np.linalg.inv(T_base_cam), atol=1e-12)
    # sibling frames: cam -> lidar = inv(T_base_lidar) @ T_base_cam
    np.testing.assert_allclose(buf.lookup("lidar", "cam"), np.linalg.inv(T_base_lidar) @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "cam", 5), T_map_base @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "cam"), np.eye(4), atol=0)
    assert buf.frames() == {"map", "base_link", "cam", "lidar"}
    assert buf.is_static_chain("lidar", "cam") and not buf.is_static_chain("map", "cam")


def test_interpolation_at_a_stamp_hand_computed() -> None:
    buf = TransformBuffer()
    buf.set_matrix("odom", "base_link", 1_000_000_000, rigid(0.0, (0.0, 0.0, 0.0)))
    buf.set_matrix("odom", "base_link", 2_000_000_000, rigid(math.pi / 2, (10.0, 2.0, 0.0)))
    T = buf.lookup("odom", "base_link", 1_250_000_000)
    np.testing.assert_allclose(T, rigid(math.pi / 8, (2.5, 0.5, 0.0)), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("odom", "base_link"), rigid(math.pi / 2, (10.0, 2.0, 0.0)), atol=1e-12)
    # an out-of-order sample is placed in time order
    buf.set_matrix("odom", "base_link", 1_500_000_000, rigid(0.0, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 1_750_000_000)[:3, 3], [5.0, 1.0, 0.0], atol=1e-12)


def test_errors_name_frames_and_stamps() -> None:
    buf = TransformBuffer(tolerance_ns=10_000_000)
    buf.set_matrix("odom", "base_link", 1_000_000_000, np.eye(4))
    buf.set_matrix("odom", "base_link", 2_000_000_000, np.eye(4))
    buf.set_matrix("other_root", "cam", 0, np.eye(4), static=True)
    with pytest.raises(UnknownFrameError, match="'nowhere'"):
        buf.lookup("base_link", "nowhere")
    with pytest.raises(ConnectivityError, match="'cam' and 'base_link' are not connected"):
        buf.lookup("base_link", "cam")
    with pytest.raises(ExtrapolationError, match=r"future.*odom -> base_link.*2\.5"):
        buf.lookup("odom", "base_link", 2_500_000_000)
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("odom", "base_link", 500_000_000)
    buf.lookup("odom", "base_link", 2_005_000_000)  # within the tolerance: the edge sample
    with pytest.raises(ValueError, match="loop"):
        buf.set_matrix("base_link", "odom", 0, np.eye(4))
    with pytest.raises(ValueError, match="norm"):
        buf.set_transform("a", "b", 0, [0, 0, 0], [0, 0, 0, 2])
    with pytest.raises(ValueError, match="rigid"):
        buf.set_matrix("a", "b", 0, np.diag([2.0, 1.0, 1.0, 1.0]))


def test_cache_time_prunes_old_samples_but_keeps_the_newest() -> None:
    buf = TransformBuffer(cache_time_ns=1_000_000_000)
    for k in range(5):
        buf.set_matrix("odom", "base_link", k * 1_000_000_000, rigid(0.0, (float(k), 0.0, 0.0)))
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base_link", 1_000_000_000)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 3_500_000_000)[0, 3], 3.5)


def test_camera_to_target_compensates_ego_motion_through_motion_frame() -> None:
    """Camera fired 50 ms before the anchor while the car drove 10 m/s forward: through odom, the camera's
    pose lands 0.5 m behind its mount in the anchor-time base_link."""
    buf = TransformBuffer()
    T_base_cam = rigid(0.0, (1.0, 0.0, 1.5))
    buf.set_matrix("base_link", "cam", 0, T_base_cam, static=True)
    t_cam, t_anchor = 1_000_000_000, 1_050_000_000
    buf.set_matrix("odom", "base_link", 900_000_000, rigid(0.0, (0.0, 0.0, 0.0)))
    buf.set_matrix("odom", "base_link", 1_100_000_000, rigid(0.0, (2.0, 0.0, 0.0)))
    T, comp = camera_to_target(buf, "base_link", "cam", t_cam, t_anchor, "odom")
    assert comp
    np.testing.assert_allclose(T[:3, 3], [0.5, 0.0, 1.5], atol=1e-9)
    T, comp = camera_to_target(buf, "base_link", "cam", t_cam, t_anchor, None)
    assert not comp
    np.testing.assert_allclose(T, T_base_cam, atol=1e-12)
    T, comp = camera_to_target(buf, "base_link", "cam", t_cam, t_anchor, "map")  # no such frame: the static mount
    assert not comp
    with pytest.raises(UnknownFrameError):
        camera_to_target(buf, "base_link", "cam2", t_cam, t_anchor, "odom")
