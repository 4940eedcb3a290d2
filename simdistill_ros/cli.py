"""The `simdistill` command: a thin dispatcher to one module per subcommand.

Each subcommand module exposes `add_arguments(parser)` and `main(args) -> int`; modules are imported
only when their subcommand runs, so `simdistill bench` never imports the nuScenes devkit and
`simdistill synth` never builds a network.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from types import FrameType

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("simdistill_ros.demo", "the product end to end on a generated world: a bag, replay through the bundled "
                                    "model, metrics, latency and pictures (--ros: through a real detector_node)"),
    "bag": ("simdistill_ros.bag_cli", "rosbag2 tools: from-nuscenes (dataroot to bag) and replay (detector over a bag, "
                                      "metrics, latency, pictures)"),
    "bench": ("simdistill_ros.bench", "median per-stage latency and peak memory of the student"),
    "bench-ros": ("simdistill_ros.bench_ros", "the ROS node's own overhead and its publish-to-receive latency"),
    "synth": ("training.data.synth.cli", "write a synthetic driving world as a nuScenes-format dataroot"),
    "eval": ("training.evaluate", "score a nuScenes results JSON with the nuScenes devkit"),
    "eval-model": ("training.eval_model", "score a student checkpoint (or random weights) with the devkit on a split"),
    "export": ("training.export", "export a student checkpoint to ONNX (any rig) or a TensorRT engine"),
    "train": ("training.train_cli", "train the teacher, the distilled student or the camera-only baseline"),
    "train-bench": ("training.bench_train", "training throughput: the loader alone and one step per stage"),
    "ablation": ("training.ablation", "toy-scale SimDistill ablation on a synthetic world (teacher, baseline, "
                                      "SimDistill, w/o CMD/GCM/MMD-P) with devkit metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simdistill", description="SimDistill camera-only 3D detection tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM becomes SystemExit, so `finally` blocks and atomic writers clean up their temporaries."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"simdistill {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # ParameterError and BagError are ValueErrors
        print(f"simdistill {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
