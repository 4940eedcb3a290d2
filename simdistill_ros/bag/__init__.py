"""rosbag2 tools (rosbags, no ROS install needed): nuScenes-format dataroots to bags, and replay evaluation."""
