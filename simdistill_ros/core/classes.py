"""The 10 nuScenes detection classes, CenterPoint task groups and their per-task NMS settings.

Values follow method.md section 4 (BEVFusion / CenterPoint nuScenes configs).
"""
from __future__ import annotations

from dataclasses import dataclass

CLASS_NAMES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)

# Box code layout of one task's head output channels, in this order (CenterPoint):
# reg (dx, dy) 2 | height (z centre) 1 | dim (log l, log w, log h) 3 | rot (sin, cos) 2 | vel (vx, vy) 2 | heatmap n_cls
BOX_CODE_SIZE = 10


@dataclass(frozen=True)
class TaskSpec:
    """One CenterHead task group.

    nms_type: "circle" (greedy by squared centre distance < radius) or "rotate" (rotated BEV IoU > iou).
    circle_radius: threshold on squared BEV centre distance (m^2) for circle NMS.
    size_scale: per-class factor applied to (l, w) before rotated NMS (small objects overlap rarely).
    """

    class_names: tuple[str, ...]
    nms_type: str
    circle_radius: float
    nms_iou: float
    size_scale: tuple[float, ...]


DEFAULT_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(("car",), "circle", 4.0, 0.2, (1.0,)),
    TaskSpec(("truck", "construction_vehicle"), "rotate", 12.0, 0.2, (1.0, 1.0)),
    TaskSpec(("bus", "trailer"), "rotate", 10.0, 0.2, (1.0, 1.0)),
    TaskSpec(("barrier",), "circle", 1.0, 0.2, (1.0,)),
    TaskSpec(("motorcycle", "bicycle"), "rotate", 0.85, 0.2, (1.0, 1.0)),
    TaskSpec(("pedestrian", "traffic_cone"), "rotate", 0.175, 0.2, (2.5, 4.0)),
)

