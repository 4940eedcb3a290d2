"""ROS 2 side of simdistill_ros: message conversion (convert), the message definitions the PyPI wheels lack
(msg/, msgdefs), camera-set to Frame assembly (frame_builder) and the rclpy node (node, the only module
that imports rclpy). Importing this package imports nothing of ROS."""
