"""The vision_msgs and tf2_msgs built at set-up from simdistill_ros/ros/msg are the official types: their
RIHS01 type hashes start like the official packages' (environment.md), so they interoperate over DDS
with a real ROS 2 install; rosbags computes the same hash from the same .msg text."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from simdistill_ros.ros.msgdefs import message_definitions

OFFICIAL_PREFIX = {
    "vision_msgs/msg/Detection3DArray": "RIHS01_793f5eab",
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f0",
}


def built_hash(name: str) -> str:
    """The hash rosidl generated, from <prefix>/share/<package>/msg/<Type>.json (the venv, or a ROS install)."""
    package, _, type_name = name.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    path = next(p for p in (Path(d) / "share" / package / "msg" / f"{type_name}.json" for d in prefixes) if p.is_file())
    desc = json.loads(path.read_text())
    return next(h["hash_string"] for h in desc["type_hashes"] if h["type_name"] == name)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PREFIX))
def test_built_types_hash_like_the_official_ones(name: str, typestore) -> None:  # noqa: ANN001
    h = built_hash(name)
    assert h.startswith(OFFICIAL_PREFIX[name]), h
    assert typestore.hash_rihs01(name) == h


def test_definitions_cover_the_types_ros_md_lists() -> None:
    assert set(message_definitions()) == {
        "vision_msgs/msg/ObjectHypothesis", "vision_msgs/msg/ObjectHypothesisWithPose", "vision_msgs/msg/BoundingBox3D",
        "vision_msgs/msg/Detection3D", "vision_msgs/msg/Detection3DArray", "tf2_msgs/msg/TFMessage"}
