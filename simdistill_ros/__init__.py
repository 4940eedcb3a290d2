"""simdistill_ros: camera-only SimDistill 3D object detection for ROS 2."""

__version__ = "0.1.0"
