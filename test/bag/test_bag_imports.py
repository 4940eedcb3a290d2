"""The bag layer's arrows (architecture.md): simdistill_ros.bag imports core and ros/convert, never training or
rclpy; importing it does not load the nuScenes devkit either (only from_nuscenes' functions use it)."""
from __future__ import annotations

import subprocess
import sys


def test_bag_imports_neither_training_nor_rclpy() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import simdistill_ros.bag as bag\n"
        "for m in pkgutil.walk_packages(bag.__path__, 'simdistill_ros.bag.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in ('training', 'rclpy', 'nuscenes'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"simdistill_ros.bag imported: {out.stdout.strip()}"
    check = subprocess.run([sys.executable, "-c", "import sys, simdistill_ros.bag, training.fsutil; "
                            "print('training' in sys.modules)"], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "True"  # the check sees an import when there is one
