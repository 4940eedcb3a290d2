"""ament_python and pip packaging of simdistill_ros.

`colcon build` installs it as a ROS 2 package (share/ files below); `pip install -e .[test]` installs it
as a plain Python package. Pins follow ../shared/design/environment.md: torch is pinned exactly (an
unpinned torch pulls the newest CUDA build), numpy<2 for the nuScenes devkit, no torchvision.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "simdistill_ros"

CORE = ["torch==2.13.0", "numpy>=1.24,<2", "pyyaml>=6", "tqdm>=4.60"]
TRAIN = [
    "nuscenes-devkit==1.2.0",
    "Shapely~=2.0.3",
    "opencv-python-headless>=4.8,<4.12",
    "matplotlib>=3.7",
    "pillow>=9",
    "tensorboard>=2.14",
]
BAG = ["rosbags==0.11.9", "mcap>=1.1", "mcap-ros2-support>=0.5"]
# ROS 2 Kilted from PyPI (environment.md): run-time wheels, plus what scripts/build_interfaces.py needs
# to build vision_msgs and tf2_msgs into the venv. Only the ros-kilted-* names are pinned (never mix
# distros); in a full ROS 2 install none of this is used (colcon, docs/ros.md).
ROS = [
    "ros-kilted-rclpy==9.1.2",
    "ros-kilted-rmw-fastrtps-cpp==9.3.3",
    "ros-kilted-builtin-interfaces==2.3.0",
    "ros-kilted-std-msgs==5.5.1",
    "ros-kilted-geometry-msgs==5.5.1",
    "ros-kilted-sensor-msgs==5.5.1",
    "ros-kilted-visualization-msgs==5.5.1",
    "ros-kilted-diagnostic-msgs==5.5.1",
    "opencv-python-headless>=4.8,<4.12",
]
ROS_BUILD = [
    "ros-kilted-ament-cmake==2.7.3",
    "ros-kilted-ament-package==0.17.2",
    "ros-kilted-ament-cmake-include-directories==2.7.3",
    "ros-kilted-ament-cmake-ros-core==0.14.5",
    "ros-kilted-rosidl-default-generators==1.7.1",
    "ros-kilted-rosidl-core-generators==0.3.1",
    "catkin-pkg==1.1.1",
]
EXPORT = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1", "ml_dtypes<0.6"]
# mcap + mcap-ros2-support: the independent reader of the bag tools' mcap files (test/bag)
TEST = ["pytest>=8", "pytest-timeout==2.4.0", "shapely~=2.0.3", "colcon-common-extensions>=0.3", "mcap==1.6.0",
        "mcap-ros2-support==0.6.0"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    package_data={f"{PACKAGE}.ros": ["msg/*/*.msg"], f"{PACKAGE}.models": ["*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/models", glob("config/models/*.yaml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "bag": BAG,
        "ros": ROS + ROS_BUILD,
        "export": EXPORT,
        "test": TEST,
        "all": TRAIN + BAG + ROS + ROS_BUILD + EXPORT + TEST,
    },
    zip_safe=False,  # the bundled checkpoint is read from a real file path
    maintainer="simdistill_ros maintainers",
    maintainer_email="maintainers@simdistill-ros.invalid",
    description="Camera-only 3D object detection distilled from a LiDAR+camera teacher (SimDistill), for ROS 2.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["simdistill = simdistill_ros.cli:main",
                                    "detector_node = simdistill_ros.ros.node:main"]},
)
