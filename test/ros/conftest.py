"""Message factories of both families for the ROS tests: rclpy's classes (the PyPI Kilted wheels plus
vision_msgs/tf2_msgs built at set-up) and rosbags' (Jazzy type store plus our .msg definitions)."""
from __future__ import annotations

import pytest

from simdistill_ros.ros.convert import MessageFactory, python_module_lookup
from simdistill_ros.ros.msgdefs import register_with


@pytest.fixture(scope="session")
def typestore():  # noqa: ANN201 - rosbags' Typestore
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    register_with(store)
    return store


@pytest.fixture(scope="session")
def rclpy_factory() -> MessageFactory:
    return MessageFactory(python_module_lookup)


@pytest.fixture(scope="session")
def rosbags_factory(typestore) -> MessageFactory:  # noqa: ANN001
    return MessageFactory(lambda name: typestore.types[name])


@pytest.fixture(params=["rclpy", "rosbags"])
def factory(request: pytest.FixtureRequest, rclpy_factory: MessageFactory, rosbags_factory: MessageFactory) -> MessageFactory:
    return rclpy_factory if request.param == "rclpy" else rosbags_factory
