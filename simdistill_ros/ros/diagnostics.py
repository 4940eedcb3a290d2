"""The node's health, one status per concern, as diagnostic_updater would publish it (which the PyPI
wheels lack): processing (rate, time, skipped sets), synchronisation (skew, dropped and partial sets),
one status per camera (its topics, images received, the last problem), and calibration (plan rebuilds,
calibration changes, ego-motion compensation, TF problems).

Problems are held for `hold_s` seconds so a 1 Hz reader sees each one. Thread-safe: callbacks and the
inference worker report into it. `to_msg` builds a diagnostic_msgs/DiagnosticArray through a
MessageFactory (fields only); nothing here imports ROS.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simdistill_ros.core.sync import SyncStats
from simdistill_ros.ros.convert import MessageFactory
from simdistill_ros.ros.frame_builder import CameraInput

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class Status:
    """One concern: level (OK/WARN/ERROR/STALE), a one-line message and key/value details."""

    name: str
    level: int
    message: str
    values: tuple[tuple[str, str], ...] = ()


@dataclass
class _Camera:
    received: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    count: int = 0
    problems: int = 0
    last_problem: str = ""
    last_problem_t: float = -1e9


class NodeHealth:
    """Accumulates what the node saw; `statuses()` summarises it (see the module docstring)."""

    def __init__(self, node_name: str, cameras: Sequence[CameraInput], hold_s: float = 3.0) -> None:
        self.node_name = node_name
        self.cameras = tuple(cameras)
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._cams = {c.name: _Camera() for c in cameras}
        self._outputs: deque[float] = deque(maxlen=200)
        self._proc_ms: deque[float] = deque(maxlen=50)
        self._infer_ms: deque[float] = deque(maxlen=50)
        self._skew_ms: deque[float] = deque(maxlen=50)
        self._latency_ms: deque[float] = deque(maxlen=50)
        self.processed = 0
        self.failed = 0
        self.last_failure = ""
        self._calib_problem = ("", -1e9)
        self.motion_compensated: tuple[bool, ...] = ()

    def image(self, camera: str) -> None:
        with self._lock:
            c = self._cams[camera]
            c.count += 1
            c.received.append(time.monotonic())

    def problem(self, camera: str, text: str) -> None:
        with self._lock:
            c = self._cams[camera]
            c.problems += 1
            c.last_problem, c.last_problem_t = text, time.monotonic()

    def calibration_problem(self, text: str) -> None:
        with self._lock:
            self._calib_problem = (text, time.monotonic())

    def output(self, processing_ms: float, inference_ms: float, skew_ms: float, latency_ms: float | None,
               motion_compensated: tuple[bool, ...]) -> None:
        with self._lock:
            self.processed += 1
            self._outputs.append(time.monotonic())
            self._proc_ms.append(processing_ms)
            self._infer_ms.append(inference_ms)
            self._skew_ms.append(skew_ms)
            if latency_ms is not None:
                self._latency_ms.append(latency_ms)
            self.motion_compensated = motion_compensated

    def failure(self, text: str) -> None:
        with self._lock:
            self.failed += 1
            self.last_failure = text

    def statuses(self, sync: SyncStats, skipped: int, plan_builds: int, calibration_changes: int,
                 motion_frame: str) -> list[Status]:
        now = time.monotonic()
        with self._lock:
            out = [self._processing(now, skipped), self._sync(sync)]
            out += [self._camera(now, cam) for cam in self.cameras]
            out.append(self._calibration(now, plan_builds, calibration_changes, motion_frame))
        return out

    def _rate(self, stamps: deque[float], now: float, window: float = 5.0) -> float:
        recent = [t for t in stamps if now - t <= window]
        return 0.0 if len(recent) < 2 else (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def _processing(self, now: float, skipped: int) -> Status:
        med = statistics.median(self._proc_ms) if self._proc_ms else 0.0
        inf = statistics.median(self._infer_ms) if self._infer_ms else 0.0
        lat = statistics.median(self._latency_ms) if self._latency_ms else 0.0
        values = (("rate_hz", f"{self._rate(self._outputs, now):.2f}"), ("processed", str(self.processed)),
                  ("processing_ms_median", f"{med:.1f}"), ("inference_ms_median", f"{inf:.1f}"),
                  ("overhead_ms_median", f"{max(med - inf, 0.0):.2f}"), ("latency_ms_median", f"{lat:.1f}"),
                  ("skipped_sets", str(skipped)), ("failed_sets", str(self.failed)), ("last_failure", self.last_failure))
        if self.processed == 0:
            return Status(f"{self.node_name}: processing", WARN, "no camera set processed yet", values)
        return Status(f"{self.node_name}: processing", OK, f"{self._rate(self._outputs, now):.1f} Hz, {med:.0f} ms per set",
                      values)

    def _sync(self, s: SyncStats) -> Status:
        skew = self._skew_ms[-1] if self._skew_ms else 0.0
        values = (("emitted_sets", str(s.emitted)), ("partial_sets", str(s.partial)),
                  ("dropped_missing_camera", str(s.dropped_missing)), ("dropped_skew", str(s.dropped_skew)),
                  ("duplicate_stamps", str(s.duplicates)), ("out_of_order_stamps", str(s.out_of_order)),
                  ("skew_ms_last", f"{skew:.1f}"),
                  ("skew_ms_max", f"{max(self._skew_ms):.1f}" if self._skew_ms else "0.0"),
                  ("last_drop", s.last_drop))
        dropped = s.dropped_missing + s.dropped_skew
        if dropped or s.partial:
            return Status(f"{self.node_name}: synchronisation", WARN,
                          f"{dropped} sets dropped, {s.partial} partial of {s.emitted + dropped}", values)
        return Status(f"{self.node_name}: synchronisation", OK, f"{s.emitted} complete sets", values)

    def _camera(self, now: float, cam: CameraInput) -> Status:
        c = self._cams[cam.name]
        values = (("image_topic", cam.image_topic), ("camera_info_topic", cam.info_topic),
                  ("images_received", str(c.count)), ("rate_hz", f"{self._rate(c.received, now):.2f}"),
                  ("problems", str(c.problems)), ("last_problem", c.last_problem))
        name = f"{self.node_name}: camera {cam.name}"
        if now - c.last_problem_t <= self.hold_s:
            return Status(name, ERROR, c.last_problem, values)
        if not c.received or now - c.received[-1] > self.hold_s:
            return Status(name, STALE, f"no image on {cam.image_topic} for {self.hold_s:.0f} s", values)
        return Status(name, OK, "receiving", values)

    def _calibration(self, now: float, plan_builds: int, changes: int, motion_frame: str) -> Status:
        comp = self.motion_compensated
        if not motion_frame:
            motion = "off (motion_frame empty): static camera mounts"
        elif comp and all(comp):
            motion = f"compensated through {motion_frame}"
        else:
            motion = f"not compensated: {motion_frame} not available in TF for every camera; static mounts used"
        values = (("plan_rebuilds", str(plan_builds)), ("calibration_changes", str(changes)),
                  ("ego_motion", motion), ("last_problem", self._calib_problem[0]))
        name = f"{self.node_name}: calibration"
        if now - self._calib_problem[1] <= self.hold_s:
            return Status(name, ERROR, self._calib_problem[0], values)
        level = WARN if motion_frame and comp and not all(comp) else OK
        return Status(name, level, f"{plan_builds} plan builds, {changes} calibration changes; ego motion {motion}", values)


def to_msg(f: MessageFactory, stamp_ns: int, statuses: Sequence[Status], hardware_id: str) -> Any:
    """diagnostic_msgs/DiagnosticArray of the statuses (level is a byte in rclpy's classes, an int in rosbags')."""
    items = []
    for s in statuses:
        level: Any = s.level if f.numpy_arrays else bytes([s.level])
        values = [f("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in s.values]
        items.append(f("diagnostic_msgs/msg/DiagnosticStatus", level=level, name=s.name, message=s.message,
                       hardware_id=hardware_id, values=values))
    return f("diagnostic_msgs/msg/DiagnosticArray", header=f.header(stamp_ns, ""), status=items)
