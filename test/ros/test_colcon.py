"""The ament_python layout users rely on, built for real: colcon builds the package into a temporary install
space, and lib/simdistill_ros/detector_node from there runs the installed package (it exits naming a
missing model: importing the node and reading the installed params file is what is checked)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ros_harness import REPO

pytestmark = pytest.mark.timeout(300)


def test_colcon_build_and_run_from_the_install_space(tmp_path: Path) -> None:
    colcon = Path(sys.executable).with_name("colcon")
    assert colcon.exists(), "colcon-common-extensions is part of the test extra"
    env = dict(os.environ, COLCON_HOME=str(tmp_path / "colcon_home"))
    out = subprocess.run([str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO),
                          "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
                          "--packages-select", "simdistill_ros", "--event-handlers", "console_direct-"],
                         capture_output=True, text=True, env=env, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    prefix = tmp_path / "install" / "simdistill_ros"
    share = prefix / "share" / "simdistill_ros"
    for rel in ("package.xml", "launch/detector.launch.py", "config/detector.param.yaml", "config/detector.rviz",
                "config/fastdds_single_host.xml", "config/models/tiny.yaml"):
        assert (share / rel).is_file(), rel
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "simdistill_ros").is_file()
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "simdistill_ros" / "ros" / "msg" / "vision_msgs" / "Detection3DArray.msg").is_file()
    node = prefix / "lib" / "simdistill_ros" / "detector_node"
    assert node.is_file() and os.access(node, os.X_OK)
    run_env = dict(env, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(prefix))
    where = subprocess.run([sys.executable, "-c", "import simdistill_ros.ros.node as n; print(n.__file__)"],
                           capture_output=True, text=True, env=run_env, timeout=60, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    res = subprocess.run([str(node), "--ros-args", "--params-file", str(share / "config" / "detector.param.yaml"),
                          "-p", "model:=/nonexistent/student.pt"], capture_output=True, text=True, env=run_env,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 2 and "parameter 'model': file /nonexistent/student.pt does not exist" in res.stderr, \
        res.stdout + res.stderr
