"""Play a bag into a running detector_node over ROS 2 and record what it publishes (an rclpy adapter, like
ros/node.py: the only other module that imports rclpy, imported lazily by the demo and the tests).

The bag's own CDR bytes go out through rclpy publishers (Publisher.publish takes serialized bytes), with
`/clock` advanced to each message's log time, so a node started with `use_sim_time:=true` lives in the
bag's time. /tf_static is published transient-local, everything else reliable. Playback is paced per
camera set: the set's TF and CameraInfo first, a short pause (DDS does not order messages across topics),
then its images, then a wait for the node's Detection3DArray stamped with the set's anchor stamp. That
makes the node process every set (its worker would otherwise skip sets it cannot keep up with), so its
output can be compared with `bag replay`'s set by set. The node's detections are recorded as CDR bytes.

The caller sets the DDS environment (ROS_AUTOMATIC_DISCOVERY_RANGE, ROS_DOMAIN_ID) before importing this.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from simdistill_ros.ros.convert import MessageFactory, python_module_lookup

MSGS = MessageFactory(python_module_lookup)


class SpinningNode:
    """A node in a context of its own, spun by a SingleThreadedExecutor on a daemon thread: the outside
    party that talks to a detector_node process (this player, the tests' peer).

    Create publishers and subscriptions on `node`, then `start()`. `close()` shuts the context down first
    and joins the thread, so spin_once never runs on a destroyed node, then destroys the node.
    """

    def __init__(self, name: str, thread_name: str = "ros-spin") -> None:
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spin(self) -> None:
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context shut down under the executor
                return

    def close(self) -> None:
        self.ctx.try_shutdown()
        self._thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()


@dataclass(frozen=True)
class PlayedMessage:
    """One bag record to publish: topic, log time (ns) and its CDR bytes."""

    topic: str
    log_ns: int
    raw: bytes


@dataclass
class Recorded:
    """What the node published while playing: the CDR bytes of each Detection3DArray by its stamp; wall seconds
    from a set's last image to its detections (None: none arrived in time); the stamps of /diagnostics."""

    detections: dict[int, bytes] = field(default_factory=dict)
    markers: dict[int, bytes] = field(default_factory=dict)
    latency_s: dict[int, float | None] = field(default_factory=dict)
    diagnostics_stamps_ns: list[int] = field(default_factory=list)


class BagPlayer:
    """Publishers for `topics` (name -> ROS type), /clock, and recorders of `detections_topic` and /diagnostics."""

    def __init__(self, topics: dict[str, str], detections_topic: str, markers_topic: str | None = None,
                 name: str = "simdistill_bag_player") -> None:
        self.spinner = SpinningNode(name, thread_name="bag-player")
        self.node = self.spinner.node
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {t: self.node.create_publisher(MSGS.cls(m), t, latched if t == "/tf_static" else reliable)
                     for t, m in topics.items()}
        self.clock = self.node.create_publisher(MSGS.cls("rosgraph_msgs/msg/Clock"), "/clock", reliable)
        self.detections_topic = detections_topic
        self.lock = threading.Lock()
        self.recorded = Recorded()
        self._arrivals: dict[int, float] = {}
        self.node.create_subscription(MSGS.cls("vision_msgs/msg/Detection3DArray"), detections_topic,
                                      self._on_detections, reliable, raw=True)
        if markers_topic is not None:
            self.node.create_subscription(MSGS.cls("visualization_msgs/msg/MarkerArray"), markers_topic,
                                          self._on_markers, reliable, raw=True)
        self.node.create_subscription(MSGS.cls("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                                      self._on_diagnostics, reliable)
        self.spinner.start()

    def _on_detections(self, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, MSGS.cls("vision_msgs/msg/Detection3DArray"))
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        with self.lock:
            self.recorded.detections[stamp] = bytes(raw)
            self._arrivals[stamp] = time.monotonic()

    def _on_markers(self, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, MSGS.cls("visualization_msgs/msg/MarkerArray"))
        if msg.markers:
            stamp = int(msg.markers[0].header.stamp.sec) * 1_000_000_000 + int(msg.markers[0].header.stamp.nanosec)
            with self.lock:
                self.recorded.markers[stamp] = bytes(raw)

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            self.recorded.diagnostics_stamps_ns.append(int(msg.header.stamp.sec) * 1_000_000_000
                                                       + int(msg.header.stamp.nanosec))

    def tick(self, stamp_ns: int) -> None:
        self.clock.publish(MSGS("rosgraph_msgs/msg/Clock", clock=MSGS.time(stamp_ns)))

    def publish(self, m: PlayedMessage) -> None:
        self.tick(m.log_ns)
        self.pubs[m.topic].publish(m.raw)

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.02)
        with self.lock:
            return pred()

    def wait_connected(self, alive: Callable[[], bool], timeout: float) -> None:
        """Until the node publishes detections and subscribes to every played topic; RuntimeError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if not alive():
                raise RuntimeError("the node exited before it connected")
            if self.node.count_publishers(self.detections_topic) and all(
                    p.get_subscription_count() for p in self.pubs.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not connect within {timeout:.0f} s")
            time.sleep(0.1)

    def play_sets(self, messages: Sequence[PlayedMessage], anchors: Sequence[int], set_timeout: float = 60.0,
                  is_image: Callable[[str], bool] = lambda t: "/image_raw" in t,
                  alive: Callable[[], bool] = lambda: True, progress: Callable[[], None] | None = None) -> Recorded:
        """Play messages (in log order) set by set: a set holds the messages up to 0.1 s before the next anchor.

        So consecutive anchors must be further apart than 0.1 s plus the spread of a set's camera stamps, as in
        key-frame bags (2 Hz, the demo's and the tests'). In a bag of every 12 Hz camera frame a set's own
        images would fall into the next group, and each wait would run into `set_timeout`."""
        bounds = [a - 100_000_000 for a in anchors[1:]] + [2**63 - 1]
        i = 0
        for anchor, bound in zip(anchors, bounds):
            group = []
            while i < len(messages) and messages[i].log_ns < bound:
                group.append(messages[i])
                i += 1
            for m in group:
                if not is_image(m.topic):
                    self.publish(m)
            time.sleep(0.1)
            for m in group:
                if is_image(m.topic):
                    self.publish(m)
            sent = time.monotonic()
            ok = self.wait(lambda a=anchor: a in self.recorded.detections or not alive(), set_timeout)
            with self.lock:
                arrived = self._arrivals.get(anchor)
                self.recorded.latency_s[anchor] = (arrived - sent) if ok and arrived is not None else None
            if progress is not None:
                progress()
        if messages:
            self.tick(messages[-1].log_ns + 1_000_000_000)
        return self.recorded

    def close(self) -> None:
        self.spinner.close()
