"""`simdistill demo`: the product end to end on a generated world, with no dataset, GPU or ROS install.

1. A small synthetic world with the generator settings the bundled model was trained with (225 x 400
   cameras, 3 LiDAR sweeps) but its own seed (2026; the model's training world uses another seed, so every
   scene here is unseen), generated once and cached (`--work`, default the per-user cache folder).
2. Its first val scene becomes a rosbag2 bag (`simdistill bag from-nuscenes`: raw cameras, CameraInfo, TF,
   ground truth).
3. The bag is replayed through the checkpoint (`simdistill bag replay`, with ego-motion compensation
   through `map`): the output bag, the devkit's mAP/NDS against the ground truth, latency percentiles,
   report.json, BEV and camera pictures.
4. With --ros, the same bag is played into a real `detector_node` process over ROS 2 on loopback (this
   command sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its own before any node
   starts), paced per set with /clock (ros/bag_player.py); the node's output is recorded to a bag and
   scored the same way, and compared box by box with the replay's.
Everything goes into --out (default ./simdistill_demo), written in a temporary folder and renamed at the
end; a non-empty --out is refused unless --force. The default checkpoint is the bundled one
(simdistill_ros.models.BUNDLED_CHECKPOINT), imported only when no --checkpoint is given.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads

VERSION = "v1.0-trainval"
DEMO_SEED = 2026
DEMO_IMAGE_SIZE = (225, 400)
DEMO_SWEEPS = 3
DEMO_SCENES = 2  # the generator makes the last of two scenes val
DEMO_SAMPLES = 10  # key frames per scene (5 s at 2 Hz)
MOTION_FRAME = "map"


@dataclass(frozen=True)
class WorldSettings:
    """The generator's settings; image_size (H, W)."""

    seed: int = DEMO_SEED
    image_size: tuple[int, int] = DEMO_IMAGE_SIZE
    sweeps: int = DEMO_SWEEPS
    scenes: int = DEMO_SCENES
    samples_per_scene: int = DEMO_SAMPLES

    @property
    def folder_name(self) -> str:
        h, w = self.image_size
        return f"demo-world-seed{self.seed}-{h}x{w}-sweeps{self.sweeps}-{self.scenes}x{self.samples_per_scene}"


def default_cache() -> Path:
    """$XDG_CACHE_HOME/simdistill_ros, else ~/.cache/simdistill_ros."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simdistill_ros"


def bundled_checkpoint() -> Path:
    """The bundled student, found as the node finds it (ros.params.resolve_model); ValueError naming the
    path when it is not installed."""
    from simdistill_ros.ros.params import ParameterError, resolve_model

    try:
        return Path(resolve_model(""))
    except ParameterError as e:
        raise ValueError(f"{e}; for the demo, pass --checkpoint PATH to a student checkpoint") from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("simdistill_demo"),
                        help="output folder (default ./simdistill_demo; a non-empty one needs --force)")
    parser.add_argument("--ros", action="store_true",
                        help="also play the bag into a real detector_node over ROS 2 (loopback) and score its output")
    parser.add_argument("--checkpoint", type=Path, help="student checkpoint (default: the bundled model)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--work", type=Path, help=f"where the generated world is cached (default {default_cache()})")
    add_threads_argument(parser, default=2, help="torch CPU threads of the replay and of the node (default 2)")
    parser.add_argument("--pictures", type=int, default=2, help="key-frame sets to draw")
    # for the tests: a smaller world (not the bundled model's settings)
    parser.add_argument("--world-samples", type=int, default=DEMO_SAMPLES, help=argparse.SUPPRESS)
    parser.add_argument("--world-image-size", type=int, nargs=2, default=list(DEMO_IMAGE_SIZE), help=argparse.SUPPRESS)


def ensure_world(cache: Path, settings: WorldSettings) -> tuple[Path, bool]:
    """The cached world (generated now when absent); returns (dataroot, generated)."""
    from training.data.synth import generate

    root = cache / settings.folder_name
    if (root / "splits.json").is_file() and (root / VERSION / "sample.json").is_file():
        return root, False
    print(f"generating the demo world (once) in {root} ...", flush=True)
    generate(root, scenes=settings.scenes, samples_per_scene=settings.samples_per_scene, seed=settings.seed,
             image_size=settings.image_size, sweeps=settings.sweeps, version=VERSION,
             workers=max(1, min(2, os.cpu_count() or 1)), force=root.exists(), progress=True)
    return root, True


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"output folder {out} exists and is not empty; pass --force to replace it")


def _check_ros_installed() -> None:
    import importlib.util

    missing = [m for m in ("rclpy", "vision_msgs", "tf2_msgs", "rosgraph_msgs") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"--ros needs the ROS 2 Python packages {', '.join(missing)}: source a ROS 2 install, or "
                         "pip install 'simdistill_ros[ros]' and run scripts/build_interfaces.py (docs/ros.md)")


def _ros_environment() -> dict[str, str]:
    """DDS on loopback with a domain of this run's own, set before rclpy is imported or a node starts."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() * 7919) % 101)
    return {k: os.environ[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}


def _node_args(params_file: Path, checkpoint: Path, threads: int) -> list[str]:
    return ["--ros-args", "--params-file", str(params_file), "-p", f"model:={checkpoint}",
            "-p", f"motion_frame:={MOTION_FRAME}", "-p", "reliable:=true", "-p", "use_sim_time:=true",
            "-p", f"torch_threads:={threads}"]


def _stop(proc: subprocess.Popen[bytes]) -> int:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


def _detections_from_node(det_raw: bytes, markers_raw: bytes | None) -> Any:
    """A node's Detection3DArray (and MarkerArray, for the velocities), CDR bytes decoded by rosbags, as Detections."""
    from simdistill_ros.bag.bagio import typestore
    from simdistill_ros.core.classes import CLASS_NAMES
    from simdistill_ros.core.types import Detections
    from simdistill_ros.ros.convert import detection_array_to_boxes, stamp_to_ns
    from simdistill_ros.ros.markers import velocities_from_markers

    msg = typestore().deserialize_cdr(det_raw, "vision_msgs/msg/Detection3DArray")
    boxes, scores, names = detection_array_to_boxes(msg)
    vel = np.zeros((len(boxes), 2))
    if markers_raw is not None:
        markers = typestore().deserialize_cdr(markers_raw, "visualization_msgs/msg/MarkerArray")
        vel = velocities_from_markers(markers, boxes[:, :3])
    return Detections(np.concatenate([boxes, vel], axis=1), scores, [CLASS_NAMES.index(n) for n in names],
                      CLASS_NAMES, stamp_ns=stamp_to_ns(msg.header.stamp))


def run_ros(bag: Path, out: Path, proc: subprocess.Popen[bytes], result: Any, report_source: dict[str, Any]
            ) -> dict[str, Any]:
    """Play the bag into the started node, record its output into out/node_detections_bag, score it."""
    from tqdm import tqdm

    from simdistill_ros.bag.bagio import BagReader, BagWriter, atomic_bag
    from simdistill_ros.bag.replay import DETECTIONS_TOPIC, MARKERS_TOPIC, empty_detections, percentiles
    from simdistill_ros.bag_report import score
    from simdistill_ros.ros.bag_player import BagPlayer, PlayedMessage

    with BagReader(bag) as r:
        topics = {t: m for t, m in r.topics.items() if t in ("/tf", "/tf_static") or t.startswith("/cam_")}
        messages = [PlayedMessage(m.topic, m.log_ns, m.raw) for m in r.messages(set(topics))]
    anchors = sorted(s.stamp_ns for s in result.emitted)
    player = BagPlayer(topics, DETECTIONS_TOPIC, MARKERS_TOPIC)
    try:
        player.wait_connected(lambda: proc.poll() is None, 180)
        bar = tqdm(total=len(anchors), desc="detector_node over ROS 2", unit="set")
        recorded = player.play_sets(messages, anchors, alive=lambda: proc.poll() is None, progress=lambda: bar.update(1))
        bar.close()
        if proc.poll() is not None:
            raise RuntimeError(f"detector_node exited with code {proc.returncode} after answering "
                               f"{len(recorded.detections)} of {len(anchors)} sets")
    finally:
        player.close()
    with atomic_bag(out / "node_detections_bag") as tmp:
        with BagWriter(tmp, "mcap", {"source": "simdistill demo --ros: detector_node's output"}) as w:
            w.add_topic(DETECTIONS_TOPIC, "vision_msgs/msg/Detection3DArray")
            w.add_topic(MARKERS_TOPIC, "visualization_msgs/msg/MarkerArray")
            for stamp in sorted(recorded.detections):
                w.write_raw(DETECTIONS_TOPIC, stamp, recorded.detections[stamp])
                if stamp in recorded.markers:
                    w.write_raw(MARKERS_TOPIC, stamp, recorded.markers[stamp])
    node_dets = {t: _detections_from_node(raw, recorded.markers.get(t)) for t, raw in recorded.detections.items()}
    preds = {}
    for t_gt, t_set in result.matches.items():
        preds[t_gt] = node_dets.get(t_set) if t_set is not None and t_set in node_dets else empty_detections(t_gt)
    metrics = {k: v for k, v in score(result.gt_aligned, preds).items() if k != "devkit"} if result.gt_aligned else None
    diffs = []
    for rec in result.emitted:
        mine = node_dets.get(rec.stamp_ns)
        if mine is not None and len(mine) == len(rec.det):
            diffs.append(float(np.abs(mine.boxes[:, :7] - rec.det.boxes[:, :7]).max()) if len(mine) else 0.0)
    latencies = [v * 1e3 for v in recorded.latency_s.values() if v is not None]
    return {**report_source, "sets_played": len(anchors), "sets_answered": len(recorded.detections),
            "sets_equal_count_to_replay": len(diffs), "max_abs_box_difference_to_replay": max(diffs, default=None),
            "metrics": metrics, "latency_ms": {"last image to detections (wall)": percentiles(latencies)},
            "velocity_note": "velocities read from the node's markers: boxes at or under 0.2 m/s count as 0"}


def _format_ros(rep: dict[str, Any]) -> str:
    m = rep["metrics"]
    lat = rep["latency_ms"]["last image to detections (wall)"]
    f = (lambda v, fmt=".1f": "-" if v is None else format(v, fmt))
    lines = [f"detector_node over ROS 2: {rep['sets_answered']} of {rep['sets_played']} sets answered; "
             f"boxes equal to the replay's within {f(rep['max_abs_box_difference_to_replay'], '.2e')} "
             f"({rep['sets_equal_count_to_replay']} sets with the same count)"]
    if m is not None:
        lines.append(f"  mAP {f(m['mAP'], '.4f')}  NDS {f(m['NDS'], '.4f')}  (velocities from the node's markers)")
    lines.append(f"  last image to detections, wall ms: p50 {f(lat['p50'])}  p90 {f(lat['p90'])}  p99 {f(lat['p99'])}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from simdistill_ros.bag.from_nuscenes import ConvertOptions, convert
    from simdistill_ros.bag.replay import replay
    from simdistill_ros.bag.settings import default_params_file, replay_params
    from simdistill_ros.bag_report import build_report, format_table, write_report_files
    from simdistill_ros.core.detector import Detector
    from simdistill_ros.ros.params import check_cameras
    from training.data.nuscenes import load_nuscenes, split_scene_names
    from training.fsutil import atomic_dir

    from simdistill_ros.bag import BAG_MODULES, require

    require(BAG_MODULES, "simdistill demo")
    t_start = time.perf_counter()
    out = Path(args.out)
    _check_out(out, args.force)
    if args.ros:
        _check_ros_installed()
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else bundled_checkpoint()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    apply_threads(args.threads)
    settings = WorldSettings(samples_per_scene=args.world_samples, image_size=tuple(args.world_image_size))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    world, generated = ensure_world(Path(args.work) if args.work else default_cache(), settings)
    timings["world_s"] = time.perf_counter() - t
    nusc = load_nuscenes(world, VERSION)
    scene = split_scene_names(world, VERSION, "val")[0]
    params_file = default_params_file()
    params = replay_params(params_file, checkpoint, {"motion_frame": MOTION_FRAME, "reliable": True})
    dds = _ros_environment() if args.ros else {}
    with atomic_dir(out, force=out.exists()) as tmp:
        t = time.perf_counter()
        summary = convert(nusc, [scene], tmp / "input_bag", ConvertOptions(storage="mcap"))
        timings["bag_s"] = time.perf_counter() - t
        proc = None
        if args.ros:  # start the node now: its start-up overlaps the replay
            log = (tmp / "node.log").open("wb")
            proc = subprocess.Popen([sys.executable, "-m", "simdistill_ros.ros.node",
                                     *_node_args(params_file, checkpoint, args.threads)],
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            t = time.perf_counter()
            detector = Detector.from_checkpoint(checkpoint, score_threshold=params.score_threshold,
                                                max_detections=params.max_detections)
            check_cameras(params, detector.config.model.camera_names)
            result = replay(tmp / "input_bag", params, detector, tmp / "detections_bag", pictures=args.pictures)
            timings["replay_s"] = time.perf_counter() - t
            source = {"checkpoint": str(checkpoint), "world": str(world), "scene": scene, "world_settings": {
                "seed": settings.seed, "image_size": list(settings.image_size), "sweeps": settings.sweeps,
                "scenes": settings.scenes, "samples_per_scene": settings.samples_per_scene},
                "motion_frame": MOTION_FRAME, "params_file": str(params_file)}
            report = build_report(result, {**source, "input_bag": str(out / "input_bag"),
                                           "output_bag": str(out / "detections_bag")})
            table = format_table(report)
            ros_text, ros_failed = "", False
            if proc is not None:
                t = time.perf_counter()
                try:
                    ros = run_ros(tmp / "input_bag", tmp, proc, result, {**source, "dds": dds})
                    ros_text = _format_ros(ros)
                except RuntimeError as e:  # keep the replay's results; say what failed
                    ros, ros_failed = {**source, "dds": dds, "error": str(e)}, True
                    ros_text = f"detector_node over ROS 2 FAILED: {e} (see {out / 'node.log'})"
                timings["ros_s"] = time.perf_counter() - t
                (tmp / "report_ros.json").write_text(json.dumps(ros, indent=2))
        finally:
            if proc is not None:
                code = _stop(proc)
                log.close()
                if code not in (0, -2):
                    print(f"simdistill demo: warning: detector_node exited with {code}; see {out / 'node.log'}",
                          file=sys.stderr)
        timings["total_s"] = time.perf_counter() - t_start
        report["demo_timings_s"] = {**timings, "world_generated_now": generated}
        pictures = write_report_files(tmp, report, result)
        (tmp / "metrics.txt").write_text(table + ("\n" + ros_text if ros_text else "") + "\n")
    print(f"\nscene {scene} of {world} ({summary.camera_frames} camera images, {summary.key_frames} key frames), "
          f"checkpoint {checkpoint}")
    print(table)
    if ros_text:
        print(ros_text)
    rviz = Path(params_file).parent / "detector.rviz"
    print(f"\nwritten to {out}/: input_bag/ (cameras, CameraInfo, TF, ground truth), detections_bag/ (detections, "
          f"markers, TF, ground truth), report.json, metrics.txt, {', '.join(pictures)}"
          + (", node_detections_bag/, report_ros.json, node.log" if args.ros else ""))
    print("watch it in a ROS 2 install:\n"
          f"  ros2 bag play {out}/detections_bag                 # the replay's boxes and the ground truth\n"
          f"  ros2 bag play {out}/input_bag --clock &            # or the cameras, into the live node:\n"
          f"  ros2 launch simdistill_ros detector.launch.py model:={checkpoint} use_sim_time:=true\n"
          f"  rviz2 -d {rviz}")
    print(f"done in {timings['total_s']:.0f} s" + (" (world generated now)" if generated else " (cached world)"))
    return 1 if ros_failed else 0
