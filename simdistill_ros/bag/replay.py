"""Bag replay: the live node's pipeline run over a bag, in stamp order, with an output bag and what scoring needs.

It uses the node's own parts with the node's parameters (bag/settings.py): camera messages go through the
sync policy (core/sync.FrameSync), sets through ros/frame_builder.FrameBuilder (CameraInfo, the same TF
buffer fed from /tf_static and /tf by ros/convert.tf_message_into, ego-motion compensation, undistortion),
frames through `Detector.detect`; detections and markers are encoded by ros/cdr.py, the bytes the node
publishes, and written to the output bag on `/detector_node/detections` and `/detector_node/markers`
stamped (and logged) at the set's stamp. /tf_static, /tf and the ground-truth topics are copied into the
output bag, so it can be watched alone.

Unlike the node there is no newest-wins slot: every emitted set is processed (replay is not real time).

Ground truth (`/gt/detections` with velocities from `/gt/markers`, bag/from_nuscenes.py) is matched to
the set whose stamp is nearest to each key frame within `match_tolerance_ns`; a key frame without one is
scored with no predictions. The boxes are moved from base_link at the key frame's stamp to base_link at
the set's stamp through `map` when TF has it (both are in the vehicle frame, 7-49 ms apart).
Bad input never stops a replay: sets that cannot be built are dropped and counted by reason, unreadable
records are skipped and counted, a truncated bag ends the replay where it breaks (ReadReport).
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from simdistill_ros.bag.bagio import BagError, BagReader, BagWriter, ReadReport, atomic_bag
from simdistill_ros.bag.from_nuscenes import BASE_FRAME, GT_MARKERS_TOPIC, GT_TOPIC, MAP_FRAME, VELOCITY_NS
from simdistill_ros.bag.settings import absolute_topic
from simdistill_ros.core.classes import CLASS_NAMES
from simdistill_ros.core.sync import CameraSet, FrameSync, SyncError, SyncStats
from simdistill_ros.core.tf_buffer import TransformBuffer, TransformError
from simdistill_ros.core.types import Detections, Frame
from simdistill_ros.ros.cdr import detection_array_cdr, marker_array_cdr
from simdistill_ros.ros.convert import detection_array_to_boxes, stamp_to_ns, tf_message_into
from simdistill_ros.ros.frame_builder import CameraInput, FrameBuilder
from simdistill_ros.ros.params import NodeParams

OUTPUT_NODE = "/detector_node"
DETECTIONS_TOPIC, MARKERS_TOPIC = f"{OUTPUT_NODE}/detections", f"{OUTPUT_NODE}/markers"
COPIED_TOPICS = ("/tf_static", "/tf", GT_TOPIC, GT_MARKERS_TOPIC)
STAGES = ("build", "preprocess", "plan", "network", "postprocess", "detect", "set")


class FrameDetector(Protocol):
    """What replay needs of core.detector.Detector."""

    def detect(self, frame: Frame) -> Detections: ...


@dataclass
class SetRecord:
    """One set the sync policy decided: emitted (det) or dropped by the frame builder (reason)."""

    stamp_ns: int
    det: Detections | None
    reason: str = ""
    frame: Frame | None = None  # kept for the first few key-frame sets (pictures)


@dataclass
class ReplayResult:
    """Everything a replay saw. gt / gt_aligned: key frame stamp -> ground truth in base_link at the key
    frame's stamp / at its matched set's stamp; matches: key frame stamp -> set stamp (None: no set)."""

    sets: list[SetRecord] = field(default_factory=list)
    gt: dict[int, Detections] = field(default_factory=dict)
    gt_aligned: dict[int, Detections] = field(default_factory=dict)
    matches: dict[int, int | None] = field(default_factory=dict)
    gt_alignment: str = ""
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    sync: dict[str, Any] = field(default_factory=lambda: sync_summary(SyncStats()))
    build_drops: Counter[str] = field(default_factory=Counter)
    refused_messages: Counter[str] = field(default_factory=Counter)
    read: ReadReport = field(default_factory=ReadReport)
    output_counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def emitted(self) -> list[SetRecord]:
        return [s for s in self.sets if s.det is not None]

    def predictions(self) -> dict[int, Detections]:
        """Key frame stamp -> the matched set's detections (empty when no set or a dropped one)."""
        by_stamp = {s.stamp_ns: s for s in self.sets}
        out = {}
        for t_gt, t_set in self.matches.items():
            rec = by_stamp.get(t_set) if t_set is not None else None
            out[t_gt] = rec.det if rec is not None and rec.det is not None else empty_detections(t_gt)
        return out


def empty_detections(stamp_ns: int) -> Detections:
    return Detections(np.zeros((0, 9)), np.zeros(0), np.zeros(0, np.int64), CLASS_NAMES, stamp_ns=stamp_ns)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "n": 0}
    p = np.percentile(np.asarray(values), [50, 90, 99])
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "n": len(values)}


def gt_from_messages(det_msg: Any, markers_msg: Any | None) -> Detections:
    """Ground truth of one key frame: boxes from the Detection3DArray, velocities from the gt_velocity arrows
    (zero where none). ValueError for an unknown class or a non-finite box."""
    boxes7, scores, names = detection_array_to_boxes(det_msg)
    vel = np.zeros((len(boxes7), 2))
    if markers_msg is not None:
        for m in markers_msg.markers:
            if m.ns == VELOCITY_NS and 0 <= int(m.id) < len(vel) and len(m.points) == 2:
                a, b = m.points
                vel[int(m.id)] = (b.x - a.x, b.y - a.y)
    unknown = sorted({n for n in names if n not in CLASS_NAMES})
    if unknown:
        raise ValueError(f"class_id {unknown[0]!r} is not a nuScenes detection class")
    boxes = np.concatenate([boxes7, vel], axis=1)
    if not np.all(np.isfinite(boxes)):
        raise ValueError("a box has NaN or infinite values")
    return Detections(boxes, np.ones(len(boxes)), np.asarray([CLASS_NAMES.index(n) for n in names], np.int64),
                      CLASS_NAMES, stamp_ns=stamp_to_ns(det_msg.header.stamp))


def move_boxes(det: Detections, T_new_old: np.ndarray, stamp_ns: int) -> Detections:
    """Boxes (and velocities) carried by a rigid 4x4 transform of their frame, restamped."""
    b = det.boxes.astype(np.float64).copy()
    R, t = T_new_old[:3, :3], T_new_old[:3, 3]
    b[:, :3] = b[:, :3] @ R.T + t
    dyaw = math.atan2(R[1, 0], R[0, 0])
    b[:, 6] = b[:, 6] + dyaw
    v = np.concatenate([b[:, 7:9], np.zeros((len(b), 1))], axis=1) @ R.T
    b[:, 7:9] = v[:, :2]
    return Detections(b, det.scores, det.labels, det.class_names, stamp_ns=stamp_ns)


def sync_summary(s: SyncStats) -> dict[str, Any]:
    return {"emitted": s.emitted, "partial": s.partial, "dropped_missing": s.dropped_missing,
            "dropped_skew": s.dropped_skew, "duplicates": s.duplicates, "out_of_order": s.out_of_order,
            "missing_by_camera": dict(s.missing_by_camera), "last_drop": s.last_drop}


class _Replay:
    def __init__(self, params: NodeParams, detector: FrameDetector, writer: BagWriter | None, pictures: int,
                 match_tolerance_ns: int) -> None:
        self.p = params
        self.detector = detector
        self.writer = writer
        self.pictures = pictures
        self.tol = match_tolerance_ns
        self.inputs = tuple(CameraInput(c, absolute_topic(i), absolute_topic(k))
                            for c, i, k in zip(params.cameras, params.image_topics, params.camera_info_topics))
        self.image_cam = {c.image_topic: c for c in self.inputs}
        self.info_cam = {c.info_topic: c for c in self.inputs}
        self.tf = TransformBuffer()
        self.history = TransformBuffer(cache_time_ns=2**62)  # all of /tf, for moving ground truth afterwards
        self.sync: FrameSync[Any] = FrameSync(params.sync_policy())
        self.builder = FrameBuilder(self.inputs, params.target_frame, self.tf, params.compressed, params.use_rectified,
                                    params.distorted, params.missing_camera, params.motion_frame, decode_threads=1)
        self.result = ReplayResult()
        self.gt_msgs: dict[int, Any] = {}
        self.gt_markers: dict[int, Any] = {}
        self.kept = 0

    def on_message(self, topic: str, msg: Any, raw: bytes, log_ns: int) -> None:
        if topic in ("/tf_static", "/tf"):
            static = topic == "/tf_static"
            for err in tf_message_into(self.tf, msg, static):
                self.result.refused_messages[f"topic {topic} {err}"] += 1
            tf_message_into(self.history, msg, static)
        elif topic in self.info_cam:
            self.builder.set_camera_info(self.info_cam[topic].name, msg)
        elif topic in self.image_cam:
            cam = self.image_cam[topic]
            try:
                sets = self.sync.add(cam.name, stamp_to_ns(msg.header.stamp), msg)
            except SyncError as e:
                self.result.refused_messages[f"topic {topic} field header.stamp: {e}"] += 1
                return
            for cset in sets:
                self.process(cset)
        elif topic == GT_TOPIC:
            self.gt_msgs[stamp_to_ns(msg.header.stamp)] = msg
        elif topic == GT_MARKERS_TOPIC:
            if msg.markers:
                self.gt_markers[stamp_to_ns(msg.markers[0].header.stamp)] = msg
        if self.writer is not None and topic in COPIED_TOPICS:
            self.writer.write_raw(topic, log_ns, raw)

    def process(self, cset: CameraSet[Any]) -> None:
        lat = self.result.latency_ms
        t0 = time.perf_counter()
        built = self.builder.build(cset)
        t1 = time.perf_counter()
        if built.frame is None:
            for cam, text in built.problems.items():
                if cset.payloads[self.p.cameras.index(cam)] is not None:
                    self.result.build_drops[f"camera {cam}: {text}"] += 1
            reason = "; ".join(built.problems.values())
            self.result.sets.append(SetRecord(cset.stamp_ns, None, reason))
            return
        det = self.detector.detect(built.frame)
        t2 = time.perf_counter()
        frame_id = self.p.target_frame
        if self.writer is not None:
            self.writer.write_raw(DETECTIONS_TOPIC, cset.stamp_ns, detection_array_cdr(det, frame_id))
            self.writer.write_raw(MARKERS_TOPIC, cset.stamp_ns,
                                  marker_array_cdr(det, frame_id, round(self.p.marker_lifetime * 1e9)))
        t3 = time.perf_counter()
        keep = None
        if self.kept < self.pictures and any(abs(t - cset.stamp_ns) <= self.tol for t in self.gt_msgs):
            keep, self.kept = built.frame, self.kept + 1
        self.result.sets.append(SetRecord(cset.stamp_ns, det, "", keep))
        lat["build"].append((t1 - t0) * 1e3)
        for k in ("preprocess", "plan", "network", "postprocess"):
            lat[k].append(float(det.timings_ms.get(k, float("nan"))))
        lat["detect"].append((t2 - t1) * 1e3)
        lat["set"].append((t3 - t0) * 1e3)

    def finish(self) -> ReplayResult:
        for cset in self.sync.flush():
            self.process(cset)
        self.builder.close()
        r = self.result
        r.sync = sync_summary(self.sync.stats)
        stamps = np.array(sorted(s.stamp_ns for s in r.sets), dtype=np.int64)
        aligned, unaligned = 0, 0
        for t_gt, msg in sorted(self.gt_msgs.items()):
            try:
                gt = gt_from_messages(msg, self.gt_markers.get(t_gt))
            except ValueError as e:
                r.refused_messages[f"topic {GT_TOPIC} at {t_gt}: {e}"] += 1
                continue
            r.gt[t_gt] = gt
            t_set = None
            if len(stamps):
                j = int(np.argmin(np.abs(stamps - t_gt)))
                if abs(int(stamps[j]) - t_gt) <= self.tol:
                    t_set = int(stamps[j])
            r.matches[t_gt] = t_set
            target = t_set if t_set is not None else t_gt
            try:
                T = self.history.lookup_through(self.p.target_frame, target, BASE_FRAME, t_gt, MAP_FRAME)
                r.gt_aligned[t_gt] = move_boxes(gt, T, target)
                aligned += 1
            except TransformError:
                try:
                    T = self.history.lookup(self.p.target_frame, BASE_FRAME, t_gt)
                except TransformError:
                    T = np.eye(4)
                r.gt_aligned[t_gt] = move_boxes(gt, T, target)
                unaligned += 1
        r.gt_alignment = (f"{aligned} key frames moved to their set's stamp through {MAP_FRAME!r}"
                          + (f"; {unaligned} without {MAP_FRAME!r} in TF, used as they are" if unaligned else ""))
        return r


def check_topics(reader: BagReader, params: NodeParams) -> None:
    """BagError when a camera's image topic is absent or of the wrong type (naming camera, topic and type)."""
    want = "sensor_msgs/msg/CompressedImage" if params.compressed else "sensor_msgs/msg/Image"
    present = sorted(set(reader.topics) | set(reader.report.unknown_types))
    for cam, topic in zip(params.cameras, params.image_topics):
        topic = absolute_topic(topic)
        if topic in reader.report.unknown_types:
            raise BagError(f"bag {reader.path}: camera {cam} topic {topic} has type "
                           f"{reader.report.unknown_types[topic]}, expected {want}")
        if topic not in reader.topics:
            hint = ""
            if not params.compressed and f"{topic}/compressed" in reader.topics:
                hint = " (the bag has compressed images: pass --compressed)"
            broken = f" ({reader.report.first_bad_record})" if reader.report.first_bad_record else ""
            raise BagError(f"bag {reader.path}: no topic {topic} for camera {cam}{hint}; the bag has "
                           f"{', '.join(present) or 'no topics'}{broken}")
        if reader.topics[topic] != want:
            raise BagError(f"bag {reader.path}: camera {cam} topic {topic} has type {reader.topics[topic]}, "
                           f"expected {want}")


def replay(bag: str | os.PathLike[str], params: NodeParams, detector: FrameDetector,
           out: str | os.PathLike[str] | None, storage: str = "mcap", force: bool = False, pictures: int = 3,
           match_tolerance_ns: int | None = None, progress: bool = True) -> ReplayResult:
    """Replay `bag` through `detector` with the node's `params`; write the output bag at `out` (None: none).

    BagError when the bag cannot be opened or lacks a camera's image topic; FileExistsError for an
    existing `out` unless force. A bag that breaks part-way is replayed up to the break, its output bag is
    written, and result.read says where it stopped."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    tol = int(params.sync_slop * 1e9) if match_tolerance_ns is None else int(match_tolerance_ns)
    with BagReader(bag) as reader:
        check_topics(reader, params)
        wanted = {absolute_topic(t) for t in (*params.image_topics, *params.camera_info_topics)} | set(COPIED_TOPICS)
        total = sum(n for t, n in reader.counts.items() if t in wanted)

        def run(writer: BagWriter | None) -> ReplayResult:
            rp = _Replay(params, detector, writer, pictures, tol)
            if writer is not None:
                writer.add_topic(DETECTIONS_TOPIC, "vision_msgs/msg/Detection3DArray")
                writer.add_topic(MARKERS_TOPIC, "visualization_msgs/msg/MarkerArray")
                for t in COPIED_TOPICS:
                    if t in reader.topics:
                        writer.add_topic(t, reader.topics[t], transient_local=t == "/tf_static")
            bar = tqdm(total=total, desc=f"replay {Path(bag).name}", unit="msg", disable=not progress)
            for m in reader.messages(wanted):
                rp.on_message(m.topic, m.msg, m.raw, m.log_ns)
                bar.update(1)
            bar.close()
            res = rp.finish()
            res.read = reader.report
            if writer is not None:
                res.output_counts = dict(writer.counts)
            return res

        if out is None:
            result = run(None)
        else:
            with atomic_bag(out, force) as tmp:
                with BagWriter(tmp, storage, {"source": "simdistill bag replay", "input": str(bag)}) as writer:
                    result = run(writer)
    result.wall_s = time.perf_counter() - t_start
    return result

