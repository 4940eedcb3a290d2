"""ROS messages <-> core types, for rclpy's message classes and rosbags' alike.

Everything here reads and writes message *fields* only. Messages are built through a `MessageFactory`
handed in, which looks classes up by ROS type name ('sensor_msgs/msg/Image'): the node gives it
rclpy's classes, the bag tools rosbags' (`MessageFactory(lambda name: typestore.types[name])`). Every
field is passed as a keyword, since rosbags' classes have no defaults.

Arrays: reading uses `np.frombuffer` on the data field (no copy: an rgb8 image without row padding,
and a bgr8/rgba8 one, becomes a strided view; preprocessing copies it once). A uint8[] field of an rclpy
class is assigned `bytes` after construction (the setter copies them with one memcpy, ~1 ms per 4.3 MB
image). Passing the data to an rclpy constructor costs ~40 ms, since the generated __init__ copies it
into an array.array that the setter then copies element by element; assigning a numpy array costs
~490 ms (environment.md). rosbags' classes take numpy arrays of the exact dtype.

Errors are `ConversionError` (a ValueError) naming the field and, through `where`, the topic.
JPEG/PNG decoding uses OpenCV (cv2.imdecode), imported when the first compressed image arrives.
"""
from __future__ import annotations

import array
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simdistill_ros.core.frames import matrix_to_quaternion, quaternion_to_matrix, yaw_quaternion
from simdistill_ros.core.tf_buffer import TransformBuffer
from simdistill_ros.core.types import Detections

ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class ConversionError(ValueError):
    """A message field that cannot be converted; the text names the field (and the topic)."""


class MessageFactory:
    """Builds messages of one family of message classes, looked up by ROS type name."""

    def __init__(self, lookup: Callable[[str], type]) -> None:
        self._lookup = lookup
        self._classes: dict[str, type] = {}

    def cls(self, name: str) -> type:
        c = self._classes.get(name)
        if c is None:
            c = self._classes[name] = self._lookup(name)
        return c

    def __call__(self, type_name: str, /, **fields: Any) -> Any:
        return self.cls(type_name)(**fields)

    @property
    def numpy_arrays(self) -> bool:
        """True for rosbags-style classes (numeric arrays are numpy arrays of the exact dtype)."""
        return hasattr(self.cls("std_msgs/msg/Header"), "__msgtype__")

    def uint8_seq(self, data: np.ndarray | bytes) -> Any:
        buf = np.ascontiguousarray(np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data,
                                   dtype=np.uint8).reshape(-1)
        if self.numpy_arrays:
            return buf
        # bytes, not array.array: with field checks off (rclpy's default) the generated setter runs
        # array.array('B', value), which copies bytes with one memcpy but an array.array element by element
        return buf.tobytes()

    def float64_seq(self, values: Iterable[float]) -> Any:
        arr = np.asarray(list(values), dtype=np.float64)
        return arr if self.numpy_arrays else array.array("d", arr.tobytes())

    def time(self, stamp_ns: int) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)

    def duration(self, ns: int) -> Any:
        sec, nanosec = divmod(int(ns), 1_000_000_000)
        return self("builtin_interfaces/msg/Duration", sec=sec, nanosec=nanosec)

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self("std_msgs/msg/Header", stamp=self.time(stamp_ns), frame_id=frame_id)

    def point(self, x: float, y: float, z: float) -> Any:
        return self("geometry_msgs/msg/Point", x=float(x), y=float(y), z=float(z))

    def vector3(self, x: float, y: float, z: float) -> Any:
        return self("geometry_msgs/msg/Vector3", x=float(x), y=float(y), z=float(z))

    def quaternion(self, q_xyzw: np.ndarray) -> Any:
        x, y, z, w = (float(v) for v in q_xyzw)
        return self("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)

    def pose(self, position: np.ndarray, q_xyzw: np.ndarray) -> Any:
        return self("geometry_msgs/msg/Pose", position=self.point(*position), orientation=self.quaternion(q_xyzw))

    def color(self, rgba: tuple[float, float, float, float]) -> Any:
        r, g, b, a = rgba
        return self("std_msgs/msg/ColorRGBA", r=float(r), g=float(g), b=float(b), a=float(a))


def python_module_lookup(name: str) -> type:
    """The class of ROS type `name` ('vision_msgs/msg/Detection3DArray') from the ROS Python packages
    (rclpy's message classes): `MessageFactory(python_module_lookup)`."""
    import importlib

    package, kind, type_name = name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), type_name)


# ---------------------------------------------------------------- reading

def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_to_rgb(msg: Any, where: str = "image") -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8; any row padding) -> uint8 H x W x 3 RGB.

    The result is a view of msg.data where the layout allows (rgb8, bgr8, rgba8, bgra8), a broadcast
    view for mono8: read-only, valid while the message lives.
    """
    enc = str(msg.encoding).lower()
    channels = ENCODING_CHANNELS.get(enc)
    if channels is None:
        raise ConversionError(f"{where} field encoding: {msg.encoding!r} is not supported "
                              f"(use one of {', '.join(ENCODING_CHANNELS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError(f"{where} fields height/width: image is {w}x{h}")
    if step < w * channels:
        raise ConversionError(f"{where} field step: {step} bytes per row is less than width {w} x {channels} channels")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < h * step:
        raise ConversionError(f"{where} field data: {data.size} bytes, expected height {h} x step {step} = {h * step} "
                              "(truncated image buffer)")
    rows = data[:h * step].reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if enc == "rgb8":
        return rows
    if enc == "bgr8":
        return rows[:, :, ::-1]
    if enc == "rgba8":
        return rows[:, :, :3]
    if enc == "bgra8":
        return rows[:, :, 2::-1]
    return np.broadcast_to(rows, (h, w, 3))


def compressed_to_rgb(msg: Any, where: str = "image") -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png; image_transport's 'bgr8; jpeg compressed bgr8' too) -> RGB."""
    fmt = str(msg.format).lower()
    if not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ConversionError(f"{where} field format: {msg.format!r} is not jpeg or png")
    import cv2

    data = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ConversionError(f"{where} field data: {data.size} bytes do not decode as {fmt} (corrupt or truncated)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Intrinsics:
    """A camera's intrinsics from CameraInfo: K 3x3, image_size (H, W), distortion model and coefficients D."""

    K: np.ndarray
    image_size: tuple[int, int]
    distortion_model: str
    D: np.ndarray

    @property
    def distorted(self) -> bool:
        return bool(self.D.size) and bool(np.any(self.D != 0.0))


def camera_info_to_intrinsics(msg: Any, use_rectified: bool = False, where: str = "camera_info") -> Intrinsics:
    """sensor_msgs/CameraInfo -> Intrinsics. use_rectified: K from P[:, :3], no distortion (the image is
    already rectified). ConversionError for zero/NaN/ill-formed K or P, binning or a partial ROI."""
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ConversionError(f"{where} fields height/width: {w}x{h}; the camera driver did not fill CameraInfo")
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise ConversionError(f"{where} fields binning_x/binning_y: binning {msg.binning_x}x{msg.binning_y} is not supported")
    roi = msg.roi
    if int(roi.width) not in (0, w) or int(roi.height) not in (0, h) or int(roi.x_offset) or int(roi.y_offset):
        raise ConversionError(f"{where} field roi: a partial region of interest is not supported")
    if use_rectified:
        P = np.asarray(msg.p, dtype=np.float64).reshape(-1)
        if P.size != 12:
            raise ConversionError(f"{where} field p: expected 12 values, got {P.size}")
        K, field_name = P.reshape(3, 4)[:, :3].copy(), "p"
        D = np.zeros(0)
    else:
        K = np.asarray(msg.k, dtype=np.float64).reshape(-1)
        if K.size != 9:
            raise ConversionError(f"{where} field k: expected 9 values, got {K.size}")
        K, field_name = K.reshape(3, 3).copy(), "k"
        D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(K)):
        raise ConversionError(f"{where} field {field_name}: contains NaN or infinite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"{where} field {field_name}: focal lengths fx={K[0, 0]}, fy={K[1, 1]} must be positive "
                              "(an all-zero K means the camera is not calibrated)")
    k20, k21, k22 = K[2].tolist()
    if abs(k20) > 1e-9 or abs(k21) > 1e-9 or abs(k22 - 1.0) > 1e-9 or K[1, 0] != 0:
        raise ConversionError(f"{where} field {field_name}: last row must be [0, 0, 1], got {K[2].tolist()}")
    K[2] = (0.0, 0.0, 1.0)
    if not np.all(np.isfinite(D)):
        raise ConversionError(f"{where} field d: contains NaN or infinite values")
    return Intrinsics(K, (h, w), str(msg.distortion_model), D)


def transform_to_matrix(msg: Any) -> tuple[str, str, int, np.ndarray]:
    """geometry_msgs/TransformStamped -> (parent frame, child frame, stamp ns, 4x4 T_parent_child)."""
    t, q = msg.transform.translation, msg.transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
    T[:3, 3] = [t.x, t.y, t.z]
    return str(msg.header.frame_id), str(msg.child_frame_id), stamp_to_ns(msg.header.stamp), T


def tf_message_into(buffer: TransformBuffer, msg: Any, static: bool) -> list[str]:
    """Add every transform of a tf2_msgs/TFMessage (from /tf or /tf_static) to the buffer.

    Returns one error text per transform the buffer refused (the others are added)."""
    errors = []
    for i, ts in enumerate(msg.transforms):
        try:
            t, q = ts.transform.translation, ts.transform.rotation
            buffer.set_transform(str(ts.header.frame_id).lstrip("/"), str(ts.child_frame_id).lstrip("/"),
                                 stamp_to_ns(ts.header.stamp), np.array([t.x, t.y, t.z]),
                                 np.array([q.x, q.y, q.z, q.w]), static=static)
        except ValueError as e:
            errors.append(f"transforms[{i}]: {e}")
    return errors


# ---------------------------------------------------------------- writing

def rgb_to_image(f: MessageFactory, rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8") -> Any:
    """uint8 H x W x 3 RGB -> sensor_msgs/Image in encoding rgb8 or bgr8 (no row padding)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConversionError(f"image for {frame_id!r}: expected uint8 H x W x 3, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ConversionError(f"image for {frame_id!r}: cannot write encoding {encoding!r} (rgb8 or bgr8)")
    h, w = rgb.shape[:2]
    pix = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    msg = f("sensor_msgs/msg/Image", header=f.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
            is_bigendian=0, step=3 * w, data=f.uint8_seq(b""))
    msg.data = f.uint8_seq(np.ascontiguousarray(pix))  # after construction: see the module docstring
    return msg


def intrinsics_to_camera_info(f: MessageFactory, K: np.ndarray, image_size: tuple[int, int], stamp_ns: int,
                              frame_id: str, D: np.ndarray | None = None) -> Any:
    """sensor_msgs/CameraInfo of a camera: K, R = identity, P = [K | 0], D (plumb_bob; empty for none)."""
    h, w = image_size
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = f("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return f("sensor_msgs/msg/CameraInfo", header=f.header(stamp_ns, frame_id), height=int(h), width=int(w),
             distortion_model="plumb_bob", d=f.float64_seq([] if D is None else np.asarray(D).reshape(-1)),
             k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def matrix_to_transform(f: MessageFactory, T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int) -> Any:
    """4x4 T_parent_child -> geometry_msgs/TransformStamped (header.frame_id parent, child_frame_id child)."""
    T = np.asarray(T_parent_child, dtype=np.float64)
    tf = f("geometry_msgs/msg/Transform", translation=f.vector3(*T[:3, 3]),
           rotation=f.quaternion(matrix_to_quaternion(T[:3, :3])))
    return f("geometry_msgs/msg/TransformStamped", header=f.header(stamp_ns, parent), child_frame_id=child, transform=tf)


def detections_to_msg(f: MessageFactory, det: Detections, frame_id: str) -> Any:
    """Detections -> vision_msgs/Detection3DArray stamped det.stamp_ns in frame_id.

    Per box: bbox.center = geometric centre with the yaw quaternion, bbox.size = (length, width, height),
    one hypothesis (class_id = class name, score) whose pose is the same centre. Velocity has no field
    in vision_msgs: it is in the markers.
    """
    items = []
    zeros36 = np.zeros(36)
    for box, score, name in zip(det.boxes.astype(np.float64), det.scores, det.names):
        pose = f.pose(box[:3], yaw_quaternion(float(box[6])))
        hyp = f("vision_msgs/msg/ObjectHypothesisWithPose",
                hypothesis=f("vision_msgs/msg/ObjectHypothesis", class_id=name, score=float(score)),
                pose=f("geometry_msgs/msg/PoseWithCovariance", pose=pose, covariance=zeros36.copy()))
        bbox = f("vision_msgs/msg/BoundingBox3D", center=f.pose(box[:3], yaw_quaternion(float(box[6]))),
                 size=f.vector3(*box[3:6]))
        items.append(f("vision_msgs/msg/Detection3D", header=f.header(det.stamp_ns, frame_id), results=[hyp],
                       bbox=bbox, id=""))
    return f("vision_msgs/msg/Detection3DArray", header=f.header(det.stamp_ns, frame_id), detections=items)


def detection_array_to_boxes(msg: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """vision_msgs/Detection3DArray -> (M x 7 boxes x, y, z, l, w, h, yaw; M scores; M class ids), the best
    hypothesis of each detection; yaw from the quaternion's rotation about z."""
    boxes, scores, names = [], [], []
    for d in msg.detections:
        c, s, q = d.bbox.center.position, d.bbox.size, d.bbox.center.orientation
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        best = max(d.results, key=lambda r: r.hypothesis.score) if len(d.results) else None
        boxes.append([c.x, c.y, c.z, s.x, s.y, s.z, yaw])
        scores.append(best.hypothesis.score if best is not None else 0.0)
        names.append(best.hypothesis.class_id if best is not None else "")
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 7), np.asarray(scores, dtype=np.float64), names
