"""ROS-free, dataset-free core: geometry, the student network, pre/post-processing, the Detector.

Imports torch, numpy, PyYAML (configs) and the standard library only (a test checks that rclpy and nuscenes stay unloaded).
"""
