"""Detections -> visualization_msgs/MarkerArray for rviz2 (which shows Detection3DArray only with a plugin).

One array per output: a DELETEALL marker first (so boxes of the previous output vanish exactly when the
new ones arrive); one LINE_LIST with the outlines of all boxes, each vertex coloured by its class; one
LINE_LIST with a velocity arrow (shaft over one second of motion, and a two-stroke head) for every
object moving faster than 0.2 m/s; and per detection a TEXT_VIEW_FACING label "class score" above its
box. Two line lists instead of a marker per box keep the array small (the node encodes it per set).
The lifetime is a parameter (default 1 s, several output periods), so a stalled node's boxes disappear
instead of staying forever, while the live ones never flicker. `marker_specs` says what to draw;
`detections_to_markers` builds the messages through a MessageFactory (fields only); ros/cdr.py encodes
the same specs straight to CDR bytes for the node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simdistill_ros.core.types import Detections
from simdistill_ros.ros.convert import MessageFactory

ARROW, LINE_LIST, TEXT_VIEW_FACING = 0, 5, 9
ADD, DELETEALL = 0, 3
MOVING_SPEED = 0.2  # m/s, nuScenes' moving threshold

CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (1.0, 0.62, 0.0),
    "truck": (1.0, 0.39, 0.28),
    "construction_vehicle": (0.91, 0.59, 0.24),
    "bus": (1.0, 0.27, 0.0),
    "trailer": (1.0, 0.55, 0.41),
    "barrier": (0.44, 0.5, 0.56),
    "motorcycle": (1.0, 0.24, 0.39),
    "bicycle": (0.86, 0.08, 0.24),
    "pedestrian": (0.0, 0.0, 0.9),
    "traffic_cone": (0.18, 0.31, 0.31),
}
OTHER_COLOR = (0.8, 0.8, 0.8)
# the 12 edges of a box as index pairs into corners_8 (bottom face 0-3, top face 4-7)
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def box_corners(boxes_m9: np.ndarray) -> np.ndarray:
    """M x 8 x 3 corners of boxes (x, y, z_centre, l, w, h, yaw, ...): bottom face then top face, each
    counter-clockwise from the front-left corner."""
    b = np.asarray(boxes_m9, dtype=np.float64).reshape(-1, 9)
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    local = np.stack([sx[None] * b[:, 3:4], sy[None] * b[:, 4:5], sz[None] * b[:, 5:6]], axis=-1)  # M x 8 x 3
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    x = c[:, None] * local[..., 0] - s[:, None] * local[..., 1] + b[:, None, 0]
    y = s[:, None] * local[..., 0] + c[:, None] * local[..., 1] + b[:, None, 1]
    z = local[..., 2] + b[:, None, 2]
    return np.stack([x, y, z], axis=-1)


_NO_POINTS = np.zeros((0, 3))
_NO_COLORS = np.zeros((0, 4), np.float32)


@dataclass(slots=True)
class MarkerSpec:
    """What one Marker shows, independent of message classes (ros/cdr.py encodes the same specs).

    points: P x 3 float64; colors: P x 4 float32 per point (empty: `rgba` for all)."""

    id: int
    type: int
    action: int
    rgba: tuple[float, float, float, float]
    scale: tuple[float, float, float]
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    points: np.ndarray = field(default_factory=lambda: _NO_POINTS)
    colors: np.ndarray = field(default_factory=lambda: _NO_COLORS)
    text: str = ""


WHITE = (1.0, 1.0, 1.0, 1.0)


def _class_rgba(det: Detections) -> np.ndarray:
    """M x 4 float32 colour of each detection's class."""
    palette = np.array([(*CLASS_COLORS.get(n, OTHER_COLOR), 1.0) for n in det.class_names], dtype=np.float32)
    return palette[det.labels].reshape(-1, 4)


def velocity_arrows(boxes_m9: np.ndarray) -> np.ndarray:
    """K x 6 x 3 line-list points of the moving boxes' arrows: shaft centre -> centre + v (1 s), and two
    head strokes back from the tip at +-30 degrees, a quarter of the shaft long (at most 1 m)."""
    b = np.asarray(boxes_m9, dtype=np.float64).reshape(-1, 9)
    v = np.concatenate([b[:, 7:9], np.zeros((len(b), 1))], axis=1)
    start = b[:, :3]
    tip = start + v
    speed = np.linalg.norm(v, axis=1, keepdims=True)
    back = -v / np.maximum(speed, 1e-9) * np.minimum(0.25 * speed, 1.0)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    left = np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1], back[:, 2]], axis=1)
    right = np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1], back[:, 2]], axis=1)
    return np.stack([start, tip, tip, tip + left, tip, tip + right], axis=1)


def marker_specs(det: Detections) -> list[MarkerSpec]:
    """DELETEALL, all box outlines, all velocity arrows, then one label per detection."""
    rgba = _class_rgba(det)
    edges = np.asarray(EDGES).reshape(-1)
    lines = box_corners(det.boxes)[:, edges].reshape(-1, 3)
    moving = np.hypot(det.boxes[:, 7], det.boxes[:, 8]) > MOVING_SPEED
    arrows = velocity_arrows(det.boxes[moving]).reshape(-1, 3)
    specs = [
        MarkerSpec(0, ARROW, DELETEALL, (0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        MarkerSpec(1, LINE_LIST, ADD, WHITE, (0.08, 0.0, 0.0), points=lines,
                   colors=np.repeat(rgba, len(edges), axis=0)),
        MarkerSpec(2, LINE_LIST, ADD, WHITE, (0.1, 0.0, 0.0), points=arrows, colors=np.repeat(rgba[moving], 6, axis=0)),
    ]
    top = det.boxes[:, 2].astype(np.float64) + det.boxes[:, 5] / 2 + 0.5
    for i, (x, y, z, name, score) in enumerate(zip(det.boxes[:, 0].tolist(), det.boxes[:, 1].tolist(), top.tolist(),
                                                   det.names, det.scores.tolist())):
        specs.append(MarkerSpec(3 + i, TEXT_VIEW_FACING, ADD, tuple(rgba[i].tolist()), (0.0, 0.0, 0.8), (x, y, z),
                                text=f"{name} {score:.2f}"))
    return specs


def detections_to_markers(f: MessageFactory, det: Detections, frame_id: str, lifetime_ns: int = 1_000_000_000,
                          ns: str = "simdistill") -> Any:
    """Detections -> visualization_msgs/MarkerArray (see the module docstring)."""
    header = f.header(det.stamp_ns, frame_id)
    markers = []
    for m in marker_specs(det):
        texture = f("sensor_msgs/msg/CompressedImage", header=f.header(0, ""), format="", data=f.uint8_seq(b""))
        mesh = f("visualization_msgs/msg/MeshFile", filename="", data=f.uint8_seq(b""))
        markers.append(f(
            "visualization_msgs/msg/Marker", header=header, ns=ns, id=m.id, type=m.type, action=m.action,
            pose=f.pose(np.asarray(m.position), np.array([0.0, 0.0, 0.0, 1.0])), scale=f.vector3(*m.scale),
            color=f.color(m.rgba), lifetime=f.duration(lifetime_ns if m.action == ADD else 0), frame_locked=False,
            points=[f.point(*p) for p in m.points], colors=[f.color(c) for c in m.colors], texture_resource="",
            texture=texture, uv_coordinates=[], text=m.text, mesh_resource="", mesh_file=mesh,
            mesh_use_embedded_materials=False))
    return f("visualization_msgs/msg/MarkerArray", markers=markers)


def velocities_from_markers(msg: Any, centres_m3: np.ndarray, ns: str = "simdistill") -> np.ndarray:
    """M x 2 (vx, vy) of boxes with these centres, read back from a MarkerArray of `detections_to_markers`:
    each velocity arrow (marker id 2, six points per moving box) starts at its box's centre. Boxes without
    an arrow (speed <= MOVING_SPEED) get 0."""
    centres = np.asarray(centres_m3, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(centres), 2))
    for m in msg.markers:
        if m.ns != ns or int(m.id) != 2 or int(m.action) != ADD:
            continue
        pts = np.array([[p.x, p.y, p.z] for p in m.points], dtype=np.float64).reshape(-1, 6, 3)
        for arrow in pts:
            if len(centres):
                i = int(np.argmin(np.linalg.norm(centres - arrow[0], axis=1)))
                if np.linalg.norm(centres[i] - arrow[0]) < 1e-6:
                    out[i] = (arrow[1] - arrow[0])[:2]
    return out
