"""Start-up errors: the node exits with code 2 and a message naming the parameter, never a silent fallback.
The processes run at once (each pays Python, rclpy and, for the camera check, torch start-up). The params
file's empty model is the bundled checkpoint: the node loads it, or, where it is not installed, stops naming
the path it looked for."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from ros_harness import PARAMS_FILE, make_checkpoint, node_command
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.ros.params import ParameterError, resolve_model

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
    default_log = tmp_path / "default_model.log"
    with default_log.open("w") as fh:  # no -p model: the params file's empty model
        default = subprocess.Popen(node_command() + base, stdout=fh, stderr=subprocess.STDOUT, text=True)
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=100)
            assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{out[-2000:]}"
            assert f"parameter {name!r}" in out and cases[name][1] in out, out[-2000:]
        try:
            bundled = resolve_model("")
        except ParameterError as e:  # not installed here: the node must say the same and stop
            assert default.wait(100) == 2, default_log.read_text()[-2000:]
            assert str(e) in default_log.read_text(), default_log.read_text()[-2000:]
            return
        deadline = time.monotonic() + 100
        while f"detector ready: {bundled}" not in default_log.read_text():
            assert default.poll() is None, f"exit {default.returncode}\n{default_log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, default_log.read_text()[-2000:]
            time.sleep(0.2)
        default.send_signal(signal.SIGINT)
        assert default.wait(30) == 0, default_log.read_text()[-2000:]
    finally:
        if default.poll() is None:
            default.kill()
            default.wait()
