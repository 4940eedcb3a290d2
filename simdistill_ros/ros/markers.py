"""Detections -> visualization_msgs/MarkerArray for rviz2 (which shows Detection3DArray only with a plugin).

One array per output: a DELETEALL marker first (so boxes of the previous output vanish exactly when the
new ones arrive), then per detection a LINE_LIST box outline coloured by class, a TEXT_VIEW_FACING label
"class score" above it, and, when it moves faster than 0.2 m/s, an ARROW of its velocity over one second.
The lifetime is a parameter (default 1 s, several output periods), so a stalled node's boxes disappear
instead of staying forever, while the live ones never flicker. Fields only, through a MessageFactory.
"""
from __future__ import annotations

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


def _marker(f: MessageFactory, header: Any, ns: str, mid: int, mtype: int, action: int, lifetime_ns: int,
            color: tuple[float, float, float, float], scale: tuple[float, float, float],
            points: list[Any] | None = None, text: str = "", position: np.ndarray | None = None) -> Any:
    texture = f("sensor_msgs/msg/CompressedImage", header=f.header(0, ""), format="", data=f.uint8_seq(b""))
    mesh = f("visualization_msgs/msg/MeshFile", filename="", data=f.uint8_seq(b""))
    return f("visualization_msgs/msg/Marker", header=header, ns=ns, id=mid, type=mtype, action=action,
             pose=f.pose(np.zeros(3) if position is None else position, np.array([0.0, 0.0, 0.0, 1.0])),
             scale=f.vector3(*scale), color=f.color(color), lifetime=f.duration(lifetime_ns), frame_locked=False,
             points=points or [], colors=[], texture_resource="", texture=texture, uv_coordinates=[], text=text,
             mesh_resource="", mesh_file=mesh, mesh_use_embedded_materials=False)


def detections_to_markers(f: MessageFactory, det: Detections, frame_id: str, lifetime_ns: int = 1_000_000_000,
                          ns: str = "simdistill") -> Any:
    """Detections -> visualization_msgs/MarkerArray (DELETEALL, then box, label and velocity per detection)."""
    header = f.header(det.stamp_ns, frame_id)
    markers = [_marker(f, header, ns, 0, ARROW, DELETEALL, 0, (0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]
    corners = box_corners(det.boxes)
    for i, (box, score, name) in enumerate(zip(det.boxes.astype(np.float64), det.scores, det.names)):
        rgb = CLASS_COLORS.get(name, OTHER_COLOR)
        pts = [f.point(*corners[i, k]) for edge in EDGES for k in edge]
        markers.append(_marker(f, header, ns, 3 * i + 1, LINE_LIST, ADD, lifetime_ns, (*rgb, 1.0), (0.08, 0.0, 0.0),
                               points=pts))
        top = np.array([box[0], box[1], box[2] + box[5] / 2 + 0.5])
        markers.append(_marker(f, header, ns, 3 * i + 2, TEXT_VIEW_FACING, ADD, lifetime_ns, (*rgb, 1.0),
                               (0.0, 0.0, 0.8), text=f"{name} {float(score):.2f}", position=top))
        v = box[7:9]
        if float(np.hypot(*v)) > MOVING_SPEED:
            start, end = box[:3], box[:3] + np.array([v[0], v[1], 0.0])
            markers.append(_marker(f, header, ns, 3 * i + 3, ARROW, ADD, lifetime_ns, (*rgb, 1.0), (0.1, 0.25, 0.3),
                                   points=[f.point(*start), f.point(*end)]))
    return f("visualization_msgs/msg/MarkerArray", markers=markers)
