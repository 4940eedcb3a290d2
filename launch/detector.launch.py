"""Start detector_node: `ros2 launch simdistill_ros detector.launch.py model:=/path/to/student.pt`.

Arguments: params_file (default: the package's config/detector.param.yaml), namespace, use_sim_time,
model, backend, device. Camera topics come from the params file (image_topics, camera_info_topics:
relative names, so a namespace moves them). Needs launch and launch_ros (a full ROS 2 install).
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
        DeclareLaunchArgument("model", description="student checkpoint (.pt)"),
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
                "model": LaunchConfiguration("model"),
                "backend": LaunchConfiguration("backend"),
                "device": LaunchConfiguration("device"),
            },
        ],
    )
    return LaunchDescription([*args, node])
