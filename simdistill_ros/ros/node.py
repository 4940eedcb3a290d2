"""`detector_node`: the rclpy node, a thin adapter around core and ros/convert (ros.md).

Callbacks only hand data on: images go to the sync policy (core/sync.py) and complete sets to a
newest-wins slot; CameraInfo is kept per camera; /tf and /tf_static fill the transform buffer. One worker
thread takes the newest set, builds the Frame (ros/frame_builder.py), runs `Detector.detect` and
publishes `~/detections` (vision_msgs/Detection3DArray), `~/markers` (MarkerArray), both as CDR bytes
written by ros/cdr.py (building rclpy message objects would cost more than inference on the CPU), and,
when asked, `~/debug/latency_ms` and `~/debug/inference_ms`. A timer publishes `/diagnostics` (ros/diagnostics.py). Bad input is reported there
and in a throttled log, and the node keeps running; bad parameters stop it at start with exit code 2
and a message naming the parameter. This is the only module that imports rclpy.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)

from simdistill_ros.core.sync import CameraSet, FrameSync, LatestSlot, SyncError
from simdistill_ros.core.tf_buffer import TransformBuffer
from simdistill_ros.ros import diagnostics
from simdistill_ros.ros.cdr import detection_array_cdr, marker_array_cdr
from simdistill_ros.ros.convert import MessageFactory, python_module_lookup, stamp_to_ns, tf_message_into
from simdistill_ros.ros.frame_builder import CameraInput, FrameBuilder
from simdistill_ros.ros.params import SPECS, NodeParams, ParameterError, check_cameras, validate

EXIT_BAD_PARAMETER = 2


class DetectorNode(Node):
    """Six cameras in, 3D detections out. Raises ParameterError at construction for a bad parameter."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("detector_node", **node_kwargs)
        self.params = self._declare_and_validate()
        self.detector = self._load_detector(self.params)
        p = self.params
        self.msgs = MessageFactory(python_module_lookup)
        self.tf = TransformBuffer()
        self.sync: FrameSync[Any] = FrameSync(p.sync_policy())
        self.inputs = tuple(CameraInput(c, self.resolve_topic_name(i), self.resolve_topic_name(k))
                            for c, i, k in zip(p.cameras, p.image_topics, p.camera_info_topics))
        self.builder = FrameBuilder(self.inputs, p.target_frame, self.tf, p.compressed, p.use_rectified, p.distorted,
                                    p.missing_camera, p.motion_frame, p.decode_threads)
        self.health = diagnostics.NodeHealth(self.get_fully_qualified_name().lstrip("/"), self.inputs)
        self.slot: LatestSlot[CameraSet[Any]] = LatestSlot()
        self._sync_lock = threading.Lock()

        self.pub_det = self.create_publisher(self.msgs.cls("vision_msgs/msg/Detection3DArray"), "~/detections", 10)
        self.pub_markers = self.create_publisher(self.msgs.cls("visualization_msgs/msg/MarkerArray"), "~/markers", 10)
        self.pub_diag = self.create_publisher(self.msgs.cls("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10)
        self.pub_latency = self.pub_inference = None
        if p.debug_latency:
            self.pub_latency = self.create_publisher(self.msgs.cls("std_msgs/msg/Float64"), "~/debug/latency_ms", 10)
            self.pub_inference = self.create_publisher(self.msgs.cls("std_msgs/msg/Float64"), "~/debug/inference_ms", 10)
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.qos_depth,
                               reliability=ReliabilityPolicy.RELIABLE if p.reliable else ReliabilityPolicy.BEST_EFFORT,
                               durability=DurabilityPolicy.VOLATILE)
        image_type = self.msgs.cls("sensor_msgs/msg/CompressedImage" if p.compressed else "sensor_msgs/msg/Image")
        info_type = self.msgs.cls("sensor_msgs/msg/CameraInfo")
        tf_type = self.msgs.cls("tf2_msgs/msg/TFMessage")
        for cam in self.inputs:
            self.create_subscription(image_type, cam.image_topic, lambda m, c=cam: self._on_image(c, m), image_qos)
            self.create_subscription(info_type, cam.info_topic, lambda m, c=cam: self.builder.set_camera_info(c.name, m),
                                     qos_profile_sensor_data if not p.reliable else image_qos)
        self.create_subscription(tf_type, "/tf", lambda m: self._on_tf(m, False),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(tf_type, "/tf_static", lambda m: self._on_tf(m, True),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"detector ready: {p.model} on {p.device} ({p.precision}), cameras {', '.join(p.cameras)}, "
            f"{'compressed' if p.compressed else 'raw'} images, {'reliable' if p.reliable else 'best-effort'} QoS, "
            f"detections in {p.target_frame}")

    # -- start-up --
    def _declare_and_validate(self) -> NodeParams:
        values = {}
        for spec in SPECS:
            desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
            if spec.range is not None and isinstance(spec.default, float):
                desc.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                to_value=float(spec.range[1]), step=0.0)]
            elif spec.range is not None:
                desc.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default, desc).value
            except Exception as e:  # rclpy raises InvalidParameterValueException / InvalidParameterTypeException
                raise ParameterError(spec.name, f"{type(e).__name__}: {e}") from e
        return validate(values)

    @staticmethod
    def _load_detector(p: NodeParams) -> Any:
        import torch

        from simdistill_ros.core.detector import Detector

        if p.torch_threads:
            torch.set_num_threads(p.torch_threads)
        try:
            det = Detector.from_checkpoint(p.model, device=p.device, precision=p.precision, backend=p.backend,
                                           score_threshold=p.score_threshold, max_detections=p.max_detections)
        except ValueError as e:
            text = str(e)
            name = "backend" if "backend" in text else "device" if ("device" in text or "CUDA" in text) \
                else "precision" if "precision" in text else "model"
            raise ParameterError(name, text) from e
        check_cameras(p, det.config.model.camera_names)
        return det

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        post = {}
        for prm in changed:
            if prm.name == "score_threshold":
                post["score_threshold"] = float(prm.value)
            elif prm.name == "max_detections":
                post["max_detections"] = int(prm.value)
        if post:
            from dataclasses import replace

            self.detector.postprocess = replace(self.detector.postprocess, **post)
        return SetParametersResult(successful=True)

    # -- callbacks: hand data on, nothing else --
    def _on_image(self, cam: CameraInput, msg: Any) -> None:
        self.health.image(cam.name)
        try:
            with self._sync_lock:
                sets = self.sync.add(cam.name, stamp_to_ns(msg.header.stamp), msg)
        except SyncError as e:
            self._problem(cam.name, f"topic {cam.image_topic} field header.stamp: {e}")
            return
        for s in sets:
            self.slot.put(s)

    def _on_tf(self, msg: Any, static: bool) -> None:
        for err in tf_message_into(self.tf, msg, static):
            text = f"topic {'/tf_static' if static else '/tf'} {err}"
            self.health.calibration_problem(text)
            self.get_logger().warn(text, throttle_duration_sec=5.0)

    def _problem(self, camera: str, text: str) -> None:
        self.health.problem(camera, text)
        self.get_logger().warn(text, throttle_duration_sec=5.0)

    # -- the worker --
    def _work(self) -> None:
        while not self.slot.closed:
            cset = self.slot.get(timeout=0.2)
            if cset is None:
                continue
            try:
                self._process(cset)
            except Exception as e:  # a bad set must never kill the worker
                self.health.failure(f"{type(e).__name__}: {e}")
                self.get_logger().error(f"set at {cset.stamp_ns / 1e9:.6f} s failed: {type(e).__name__}: {e}",
                                        throttle_duration_sec=5.0)

    def _process(self, cset: CameraSet[Any]) -> None:
        t0 = time.perf_counter()
        built = self.builder.build(cset)
        for cam, text in built.problems.items():
            if cset.payloads[self.params.cameras.index(cam)] is not None:  # silent cameras are the sync's concern
                self._problem(cam, text)
        if built.frame is None:
            self.health.failure(f"set at {cset.stamp_ns / 1e9:.6f} s dropped: " + "; ".join(built.problems.values()))
            return
        det = self.detector.detect(built.frame)
        frame_id = self.params.target_frame
        self.pub_det.publish(detection_array_cdr(det, frame_id))
        self.pub_markers.publish(marker_array_cdr(det, frame_id, round(self.params.marker_lifetime * 1e9)))
        latency = None
        if self.pub_latency is not None:
            latency = (self.get_clock().now().nanoseconds - cset.stamp_ns) / 1e6
            self.pub_latency.publish(self.msgs("std_msgs/msg/Float64", data=float(latency)))
            self.pub_inference.publish(self.msgs("std_msgs/msg/Float64", data=float(det.timings_ms.get("total", 0.0))))
        self.health.output((time.perf_counter() - t0) * 1e3, det.timings_ms.get("total", 0.0), cset.skew_ns / 1e6,
                           latency, built.motion_compensated)

    def _publish_diagnostics(self) -> None:
        with self._sync_lock:
            stats = self.sync.stats
        statuses = self.health.statuses(stats, self.slot.skipped, self.detector.plans.builds,
                                        self.builder.calibration_changes, self.params.motion_frame)
        self.pub_diag.publish(diagnostics.to_msg(self.msgs, self.get_clock().now().nanoseconds, statuses,
                                                 self.get_fully_qualified_name()))

    def close(self) -> None:
        self.slot.close()
        self._worker.join(timeout=10.0)
        self.builder.close()


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        try:
            node = DetectorNode()
        except ParameterError as e:
            print(f"detector_node: {e}", file=sys.stderr)
            return EXIT_BAD_PARAMETER
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
