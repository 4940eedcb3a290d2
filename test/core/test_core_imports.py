"""core must stay ROS-free and dataset-free: importing it loads neither rclpy nor nuscenes."""
from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_ros_or_dataset_modules() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import simdistill_ros.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'simdistill_ros.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('rclpy', 'nuscenes', 'rosbags', 'cv2', 'message_filters', 'tf2_ros', 'cv_bridge', 'training', 'shapely'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported forbidden modules: {out.stdout.strip()}"


def test_the_check_itself_catches_a_forbidden_import() -> None:
    code = "import sys, simdistill_ros.core, nuscenes; print('nuscenes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
