"""Start detector_node: `ros2 launch simdistill_ros detector.launch.py [model:=/path/to/student.pt]`.

Arguments: params_file (default: the package's config/detector.param.yaml), namespace, use_sim_time,
model (default empty: the node loads the bundled model, simdistill_ros.models.BUNDLED_CHECKPOINT),
backend, device. model, backend and device override the params file. They are passed as strings
(ParameterValue with value_type=str): launch_ros would otherwise read them as YAML, and an empty model
would become None. Camera topics come from the params file (image_topics, camera_info_topics: relative
names, so a namespace moves them). Needs launch and launch_ros (a full ROS 2 install); never run here.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("simdistill_ros")
    args = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "detector.param.yaml"),
                              description="parameters of detector_node"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("model", default_value="",
                              description="student checkpoint (.pt), ONNX file or engine; empty: the bundled model"),
        DeclareLaunchArgument("backend", default_value="auto", description="torch, onnxruntime, tensorrt or auto"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:N"),
    ]
    node = Node(
        package="simdistill_ros",
        executable="detector_node",
        name="detector_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
            },
        ],
    )
    return LaunchDescription([*args, node])
