"""Start-up errors: the node exits with code 2 and a message naming the parameter, never a silent fallback.
The four processes run at once (each pays Python, rclpy and, for the camera check, torch start-up)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ros_harness import PARAMS_FILE, make_checkpoint, node_command
from simdistill_ros.core.config import DetectorConfig

pytestmark = pytest.mark.timeout(120)


def test_bad_parameters_exit_non_zero_naming_the_parameter(tmp_path: Path, small_config: DetectorConfig) -> None:
    ckpt = make_checkpoint(tmp_path / "tiny.pt", small_config)
    base = ["--ros-args", "--params-file", str(PARAMS_FILE)]
    reordered = list(small_config.model.camera_names)
    reordered[0], reordered[1] = reordered[1], reordered[0]
    cases = {
        "model": (["-p", f"model:={tmp_path / 'missing.pt'}"], "file"),
        "score_threshold": (["-p", f"model:={ckpt}", "-p", "score_threshold:=1.5"], "out of range"),
        "backend": (["-p", f"model:={ckpt}", "-p", "backend:=opencl"], "'opencl' is not one of"),
        "cameras": (["-p", f"model:={ckpt}", "-p", "cameras:=[" + ",".join(reordered) + "]"],
                    "differ from the checkpoint's camera order"),
    }
    procs = {name: subprocess.Popen(node_command() + base + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=100)
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{out[-2000:]}"
        assert f"parameter {name!r}" in out and cases[name][1] in out, out[-2000:]
