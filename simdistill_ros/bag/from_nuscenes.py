"""A nuScenes-format database (real or synthetic, read through the devkit) -> a rosbag2 bag (ros.md, Bags).

Per scene, in stamp order (header stamps and log times are the dataset's timestamps, microseconds ->
nanoseconds; nothing is stamped with the wall clock):
- `/tf_static` (transient local): base_link -> `<cam>_optical_frame` of every camera (nuScenes' camera
  frame is already the optical frame: z forward, x right, y down) and base_link -> `lidar_top`, from the
  calibrated_sensor records; written at the start of the first scene, and again where a later scene's
  vehicle is calibrated differently;
- `/tf`: map -> base_link at the stamp of every ego pose a written message uses (each camera image has its
  own ego pose, so the node and replay can compensate ego motion between cameras through `map`);
- per camera `/<cam>/image_raw` (sensor_msgs/Image rgb8, decoded from the dataset's JPEG) or, with
  compressed, `/<cam>/image_raw/compressed` (the JPEG bytes as they are), and `/<cam>/camera_info` at the
  same stamp: K from the record, R = identity, P = [K | 0], D = five zeros (plumb_bob: nuScenes images are
  undistorted), the image's own size; every camera frame of the scene, or only key frames;
- `/gt/detections` (vision_msgs/Detection3DArray in base_link at each key frame's stamp, the LIDAR_TOP
  ego pose, as training's infos): detection classes only, boxes with no LiDAR or radar point left out
  (the devkit's evaluation filters them), centre, yaw quaternion, size (l, w, h), class name, score 1,
  Detection3D.id = the sample_annotation token; `/gt/markers`: the boxes for rviz, plus one ARROW
  marker per box in namespace `gt_velocity` (id = index in the array, points = centre and centre + v for
  one second: the velocity, which vision_msgs has no field for; a velocity the devkit cannot estimate is
  0, as in training);
- with lidar, `/lidar_top/points` (PointCloud2 x, y, z, intensity, ring as float32 in lidar_top) for the
  key frames and sweeps.
The camera images of one key frame carry their own timestamps (nuScenes cameras fire 7-49 ms after the
LiDAR), never the LiDAR's.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simdistill_ros.bag.bagio import BagWriter, atomic_bag, factory
from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.config import NUSCENES_CAMERAS
from simdistill_ros.core.frames import quaternion_to_matrix, yaw_quaternion
from simdistill_ros.core.types import Detections
from simdistill_ros.ros.convert import (MessageFactory, detections_to_msg, intrinsics_to_camera_info,
                                        matrix_to_transform, rgb_to_image)
from simdistill_ros.ros.markers import ADD, ARROW, detections_to_markers

if TYPE_CHECKING:
    from nuscenes import NuScenes

BASE_FRAME, MAP_FRAME, LIDAR_FRAME = "base_link", "map", "lidar_top"
GT_TOPIC, GT_MARKERS_TOPIC, LIDAR_TOPIC = "/gt/detections", "/gt/markers", "/lidar_top/points"
VELOCITY_NS = "gt_velocity"


def optical_frame(camera: str) -> str:
    return f"{camera.lower()}_optical_frame"


def image_topic(camera: str, compressed: bool) -> str:
    return f"/{camera.lower()}/image_raw" + ("/compressed" if compressed else "")


def info_topic(camera: str) -> str:
    return f"/{camera.lower()}/camera_info"


def _transform(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    w, x, y, z = (float(v) for v in rotation_wxyz)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(np.array([x, y, z, w]))
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


@dataclass(frozen=True)
class ConvertOptions:
    """compressed: JPEG bytes on .../image_raw/compressed; lidar: add PointCloud2; keyframes_only: key-frame
    cameras (and LiDAR) only; storage: mcap or sqlite3."""

    storage: str = "mcap"
    compressed: bool = False
    lidar: bool = False
    keyframes_only: bool = False


@dataclass
class ConvertSummary:
    """What was written: messages per topic, scenes, key frames, first and last stamp (ns)."""

    bag: Path
    scenes: list[str]
    cameras: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)
    key_frames: int = 0
    gt_boxes: int = 0
    first_ns: int = 0
    last_ns: int = 0

    @property
    def camera_frames(self) -> int:
        return sum(n for t, n in self.counts.items() if "/image_raw" in t)


@dataclass(order=True)
class _Event:
    stamp_ns: int
    rank: int  # at one stamp: /tf_static, /tf, camera_info, then the rest
    seq: int
    topic: str = field(compare=False)
    build: Callable[[], Any] = field(compare=False)


class _Scene:
    """The events of one scene (built lazily: images are read when written)."""

    def __init__(self, nusc: NuScenes, name: str, opts: ConvertOptions, f: MessageFactory) -> None:
        by_name = {s["name"]: s for s in nusc.scene}
        if name not in by_name:
            raise ValueError(f"scene {name!r} is not in the database (has {', '.join(sorted(by_name)[:8])}"
                             + (" ..." if len(by_name) > 8 else "") + ")")
        self.nusc, self.name, self.opts, self.f = nusc, name, opts, f
        self.scene = by_name[name]
        first = nusc.get("sample", self.scene["first_sample_token"])
        self.cameras = tuple(c for c in NUSCENES_CAMERAS if c in first["data"])
        if not self.cameras:
            raise ValueError(f"scene {name!r}: its first sample has no camera (channels {', '.join(first['data'])})")
        self.first = first
        self.events: list[_Event] = []
        self.poses: dict[int, np.ndarray] = {}
        self.key_frames = 0
        self.gt_boxes = 0

    def _add(self, stamp_ns: int, rank: int, topic: str, build: Callable[[], Any]) -> None:
        self.events.append(_Event(stamp_ns, rank, len(self.events), topic, build))

    def _chain(self, channel: str) -> list[dict[str, Any]]:
        """sample_data records of one channel through the scene, in time order."""
        sd = self.nusc.get("sample_data", self.first["data"][channel])
        while sd["prev"]:  # a channel may start with sweeps before the first key frame
            prev = self.nusc.get("sample_data", sd["prev"])
            if self.nusc.get("sample", prev["sample_token"])["scene_token"] != self.scene["token"]:
                break
            sd = prev
        out = []
        while True:
            if sd["is_key_frame"] or not self.opts.keyframes_only:
                out.append(sd)
            if not sd["next"]:
                return out
            sd = self.nusc.get("sample_data", sd["next"])
            if self.nusc.get("sample", sd["sample_token"])["scene_token"] != self.scene["token"]:
                return out

    def _pose(self, sd: dict[str, Any]) -> int:
        stamp = int(sd["timestamp"]) * 1000
        if stamp not in self.poses:
            pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
            self.poses[stamp] = _transform(pose["translation"], pose["rotation"])
        return stamp

    def static_transforms(self) -> dict[str, np.ndarray]:
        """child frame -> T_base_link_child of this scene's vehicle."""
        out = {}
        channels = list(self.cameras) + (["LIDAR_TOP"] if "LIDAR_TOP" in self.first["data"] else [])
        for ch in channels:
            sd = self.nusc.get("sample_data", self.first["data"][ch])
            cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            out[LIDAR_FRAME if ch == "LIDAR_TOP" else optical_frame(ch)] = _transform(cs["translation"], cs["rotation"])
        return out

    def build(self, write_static: bool) -> None:
        nusc, f = self.nusc, self.f
        start_ns = int(self.first["timestamp"]) * 1000
        if write_static:
            statics = self.static_transforms()
            self._add(start_ns, 0, "/tf_static", lambda: f("tf2_msgs/msg/TFMessage", transforms=[
                matrix_to_transform(f, T, BASE_FRAME, child, start_ns) for child, T in statics.items()]))
        for cam in self.cameras:
            for sd in self._chain(cam):
                stamp = self._pose(sd)
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                path = Path(nusc.dataroot) / sd["filename"]
                self._add(stamp, 3, image_topic(cam, self.opts.compressed),
                          lambda p=path, s=stamp, c=cam, t=sd["token"]: self._image(p, s, c, t))
                K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
                if K.shape != (3, 3):
                    raise ValueError(f"scene {self.name} camera {cam} calibrated_sensor {cs['token']}: "
                                     f"camera_intrinsic is not 3x3")
                size = (int(sd["height"]), int(sd["width"]))
                self._add(stamp, 2, info_topic(cam), lambda K=K, size=size, s=stamp, c=cam: intrinsics_to_camera_info(
                    f, K, size, s, optical_frame(c), D=np.zeros(5)))
        if self.opts.lidar and "LIDAR_TOP" in self.first["data"]:
            for sd in self._chain("LIDAR_TOP"):
                stamp = self._pose(sd)
                path = Path(nusc.dataroot) / sd["filename"]
                self._add(stamp, 3, LIDAR_TOPIC, lambda p=path, s=stamp: self._points(p, s))
        token = self.scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            self._ground_truth(sample)
            token = sample["next"]
        for stamp, T in self.poses.items():
            self._add(stamp, 1, "/tf", lambda T=T, s=stamp: f("tf2_msgs/msg/TFMessage", transforms=[
                matrix_to_transform(f, T, MAP_FRAME, BASE_FRAME, s)]))
        self.events.sort()

    def _image(self, path: Path, stamp: int, cam: str, token: str) -> Any:
        f = self.f
        if not path.is_file():
            raise FileNotFoundError(f"scene {self.name} camera {cam} sample_data {token}: image {path} does not exist")
        if self.opts.compressed:
            data = path.read_bytes()
            fmt = "png" if data[:4] == b"\x89PNG" else "jpeg"
            msg = f("sensor_msgs/msg/CompressedImage", header=f.header(stamp, optical_frame(cam)), format=fmt,
                    data=f.uint8_seq(b""))
            msg.data = f.uint8_seq(data)
            return msg
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"scene {self.name} camera {cam} sample_data {token}: image {path} does not decode")
        return rgb_to_image(f, np.ascontiguousarray(bgr[:, :, ::-1]), stamp, optical_frame(cam))

    def _points(self, path: Path, stamp: int) -> Any:
        f = self.f
        if not path.is_file():
            raise FileNotFoundError(f"scene {self.name} LIDAR_TOP: point file {path} does not exist")
        raw = np.fromfile(path, dtype="<f4")
        if raw.size % 5:
            raise ValueError(f"scene {self.name} LIDAR_TOP: {path} holds {raw.size} floats, not a multiple of 5")
        pts = raw.reshape(-1, 5)
        fields = [f("sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=7, count=1)  # 7: FLOAT32
                  for i, n in enumerate(("x", "y", "z", "intensity", "ring"))]
        return f("sensor_msgs/msg/PointCloud2", header=f.header(stamp, LIDAR_FRAME), height=1, width=len(pts),
                 fields=fields, is_bigendian=False, point_step=20, row_step=20 * len(pts),
                 data=f.uint8_seq(pts.tobytes()), is_dense=True)

    def _ground_truth(self, sample: dict[str, Any]) -> None:
        from nuscenes.eval.detection.utils import category_to_detection_name

        nusc, f = self.nusc, self.f
        if "LIDAR_TOP" in sample["data"]:
            stamp = self._pose(nusc.get("sample_data", sample["data"]["LIDAR_TOP"]))
        else:
            stamp = int(sample["timestamp"]) * 1000
            self._pose(nusc.get("sample_data", sample["data"][self.cameras[0]]))
            if stamp not in self.poses:
                raise ValueError(f"sample {sample['token']}: no LIDAR_TOP, and no ego pose at the key frame's stamp")
        global_to_ego = np.linalg.inv(self.poses[stamp])
        boxes, labels, tokens = [], [], []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or int(ann["num_lidar_pts"]) + int(ann["num_radar_pts"]) == 0:
                continue
            T = global_to_ego @ _transform(ann["translation"], ann["rotation"])
            yaw = float(np.arctan2(T[1, 0], T[0, 0]))
            w, l, h = (float(v) for v in ann["size"])
            vel = global_to_ego[:3, :3] @ np.nan_to_num(nusc.box_velocity(ann_token), nan=0.0)
            boxes.append([*T[:3, 3], l, w, h, yaw, vel[0], vel[1]])
            labels.append(CLASS_NAMES.index(name))
            tokens.append(ann_token)
        det = Detections(np.asarray(boxes, np.float64).reshape(-1, 9), np.ones(len(boxes)), np.asarray(labels, np.int64),
                         CLASS_NAMES, stamp_ns=stamp)
        boxes64 = np.asarray(boxes, np.float64).reshape(-1, 9)
        self.key_frames += 1
        self.gt_boxes += len(boxes)
        self._add(stamp, 3, GT_TOPIC, lambda: self._gt_msg(det, boxes64, tokens))
        self._add(stamp, 3, GT_MARKERS_TOPIC, lambda: self._gt_markers(det, boxes64))

    def _gt_msg(self, det: Detections, boxes64: np.ndarray, tokens: list[str]) -> Any:
        msg = detections_to_msg(self.f, det, BASE_FRAME)
        for d, b, tok in zip(msg.detections, boxes64, tokens):  # float64 boxes, not the container's float32
            d.bbox.center = self.f.pose(b[:3], yaw_quaternion(float(b[6])))
            d.results[0].pose.pose = self.f.pose(b[:3], yaw_quaternion(float(b[6])))
            d.bbox.size = self.f.vector3(*b[3:6])
            d.id = tok
        return msg

    def _gt_markers(self, det: Detections, boxes64: np.ndarray) -> Any:
        f = self.f
        still = Detections(np.concatenate([det.boxes[:, :7], np.zeros((len(det), 2))], axis=1), det.scores, det.labels,
                           det.class_names, stamp_ns=det.stamp_ns)
        msg = detections_to_markers(f, still, BASE_FRAME, ns="gt")
        template = msg.markers[-1] if msg.markers else None
        for i, b in enumerate(boxes64):
            m = _copy_marker(f, template, det.stamp_ns)
            m.ns, m.id, m.type, m.action = VELOCITY_NS, i, ARROW, ADD
            m.scale = f.vector3(0.1, 0.2, 0.2)
            m.points = [f.point(*b[:3]), f.point(b[0] + b[7], b[1] + b[8], b[2])]
            m.color = f.color((0.2, 0.9, 0.2, 1.0))
            msg.markers.append(m)
        return msg


def _copy_marker(f: MessageFactory, template: Any, stamp_ns: int) -> Any:
    """A fresh Marker with the template's empty texture/mesh fields."""
    return f("visualization_msgs/msg/Marker", header=f.header(stamp_ns, BASE_FRAME), ns="", id=0, type=ARROW,
             action=ADD, pose=f.pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0])), scale=f.vector3(1, 1, 1),
             color=f.color((1, 1, 1, 1)), lifetime=f.duration(0), frame_locked=False, points=[], colors=[],
             texture_resource="", texture=template.texture, uv_coordinates=[], text="", mesh_resource="",
             mesh_file=template.mesh_file, mesh_use_embedded_materials=False)


TOPIC_TYPES = {"/tf_static": "tf2_msgs/msg/TFMessage", "/tf": "tf2_msgs/msg/TFMessage",
               GT_TOPIC: "vision_msgs/msg/Detection3DArray", GT_MARKERS_TOPIC: "visualization_msgs/msg/MarkerArray",
               LIDAR_TOPIC: "sensor_msgs/msg/PointCloud2"}


def convert(nusc: NuScenes, scene_names: Sequence[str], out: str | os.PathLike[str], opts: ConvertOptions,
            force: bool = False, progress: bool = True) -> ConvertSummary:
    """Write the named scenes of a devkit database to a new bag at `out` (see the module docstring).

    FileExistsError for an existing `out` unless force; nothing is left at `out` when a record is bad."""
    from tqdm import tqdm

    if not scene_names:
        raise ValueError("no scenes to convert")
    f = factory()
    scenes, last_static = [], None
    for sc in sorted((_Scene(nusc, name, opts, f) for name in scene_names), key=lambda sc: sc.first["timestamp"]):
        statics = sc.static_transforms()
        changed = last_static is None or statics.keys() != last_static.keys() or any(
            not np.allclose(statics[k], last_static[k]) for k in statics)
        sc.build(write_static=changed)
        last_static = statics
        scenes.append(sc)
    for a, b in zip(scenes, scenes[1:]):
        if a.events and b.events and b.events[0].stamp_ns <= a.events[-1].stamp_ns:
            raise ValueError(f"scenes {a.name} and {b.name} overlap in time; write them to separate bags")
    cameras = scenes[0].cameras
    summary = ConvertSummary(Path(out), [sc.name for sc in scenes], cameras)
    events = [e for sc in scenes for e in sc.events]
    if not events:
        raise ValueError(f"scenes {', '.join(scene_names)} hold no messages")
    custom = {"source": "nuscenes", "dataroot": str(nusc.dataroot), "version": str(nusc.version),
              "scenes": ",".join(sorted(scene_names)), "cameras": ",".join(cameras)}
    with atomic_bag(out, force) as tmp:
        with BagWriter(tmp, opts.storage, custom) as writer:
            for cam in cameras:
                writer.add_topic(image_topic(cam, opts.compressed),
                                 "sensor_msgs/msg/CompressedImage" if opts.compressed else "sensor_msgs/msg/Image")
                writer.add_topic(info_topic(cam), "sensor_msgs/msg/CameraInfo")
            for topic, msgtype in TOPIC_TYPES.items():
                if topic != LIDAR_TOPIC or opts.lidar:
                    writer.add_topic(topic, msgtype, transient_local=topic == "/tf_static")
            for ev in tqdm(events, desc=f"bag {Path(out).name}", unit="msg", disable=not progress):
                topic = ev.topic
                if topic not in writer.counts:
                    raise ValueError(f"scene camera set differs from the first scene's ({', '.join(cameras)}): "
                                     f"topic {topic}")
                writer.write(topic, ev.stamp_ns, ev.build())
        summary.counts = dict(writer.counts)
    summary.first_ns, summary.last_ns = events[0].stamp_ns, events[-1].stamp_ns
    summary.key_frames = sum(sc.key_frames for sc in scenes)
    summary.gt_boxes = sum(sc.gt_boxes for sc in scenes)
    return summary
