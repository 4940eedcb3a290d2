"""`simdistill bench-ros`: the ROS node's own cost and its end-to-end latency, per six-camera set of raw
1600x900 rgb8 images (docs/benchmarks.md).

1. overhead: what detector_node does per set besides `Detector.detect`, in one process, no DDS:
   six image callbacks into the sync policy, the Frame built from the messages (conversion, CameraInfo,
   TF, calibration check), the Detection3DArray and MarkerArray encoded (ros/cdr.py) and published, for
   a given number of detections. Medians per stage.
2. latency: detector_node as a process (tiny preset, random weights); this process publishes sets
   stamped with the wall clock and receives the Detection3DArray; latency = receive time - stamp,
   minus the node's own inference time of that set (~/debug/inference_ms): transport in and out, sync,
   conversion and message building. Once with the default Fast DDS set-up (discovery on localhost),
   once with the single-host profile (config/fastdds_single_host.xml). Sets are sent slower than the
   node can process them, so the worker never skips one; best-effort input, so lost sets are counted.
Every part runs in a child process with its own DDS environment: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
or the profile (loopback only), and a ROS_DOMAIN_ID of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"
SIZE = (900, 1600)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", type=int, default=20, help="camera sets per measurement")
    parser.add_argument("--detections", type=int, nargs="+", default=[50, 300],
                        help="detections per set for the overhead part")
    parser.add_argument("--rate", type=float, default=0.25,
                        help="sets per second in the latency part (below 1 / inference time: no set skipped)")
    parser.add_argument("--qos", choices=["reliable", "best-effort"], default="reliable",
                        help="QoS of the camera topics in the latency part (publisher and node alike)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model for the node (default: tiny preset, random weights)")
    parser.add_argument("--parts", nargs="+", default=["overhead", "latency", "latency-profile"],
                        choices=["overhead", "latency", "latency-profile"])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _sample_messages(factory: Any) -> tuple[list[Any], list[Any], Any]:
    from simdistill_ros.core.config import NUSCENES_CAMERAS
    from simdistill_ros.core.rig import random_frame
    from simdistill_ros.ros.convert import intrinsics_to_camera_info, matrix_to_transform, rgb_to_image

    frame = random_frame(NUSCENES_CAMERAS, seed=0, image_size=SIZE)
    images = [rgb_to_image(factory, im, 0, f"{c.name.lower()}_optical") for im, c in zip(frame.images, frame.calibrations)]
    infos = [intrinsics_to_camera_info(factory, c.K, c.image_size, 0, f"{c.name.lower()}_optical") for c in frame.calibrations]
    tf = factory("tf2_msgs/msg/TFMessage", transforms=[
        matrix_to_transform(factory, c.cam_to_ego, "base_link", f"{c.name.lower()}_optical", 0) for c in frame.calibrations])
    return images, infos, tf


def _overhead(sets: int, counts: list[int]) -> dict[str, Any]:
    import rclpy

    from simdistill_ros.core.classes import CLASS_NAMES
    from simdistill_ros.core.config import NUSCENES_CAMERAS
    from simdistill_ros.core.sync import FrameSync, SyncPolicy
    from simdistill_ros.core.tf_buffer import TransformBuffer
    from simdistill_ros.core.types import Detections
    from simdistill_ros.ros.cdr import detection_array_cdr, marker_array_cdr
    from simdistill_ros.ros.convert import MessageFactory, python_module_lookup, stamp_to_ns, tf_message_into
    from simdistill_ros.ros.frame_builder import CameraInput, FrameBuilder

    f = MessageFactory(python_module_lookup)
    images, infos, tf_msg = _sample_messages(f)
    tf = TransformBuffer()
    tf_message_into(tf, tf_msg, static=True)
    cams = [CameraInput(c, f"/{c.lower()}/image_raw", f"/{c.lower()}/camera_info") for c in NUSCENES_CAMERAS]
    builder = FrameBuilder(cams, "base_link", tf, compressed=False)
    sync: FrameSync[Any] = FrameSync(SyncPolicy(NUSCENES_CAMERAS, "CAM_FRONT"))
    rclpy.init()
    node = rclpy.create_node("simdistill_bench_overhead")
    pub_det = node.create_publisher(f.cls("vision_msgs/msg/Detection3DArray"), "~/detections", 10)
    pub_mk = node.create_publisher(f.cls("visualization_msgs/msg/MarkerArray"), "~/markers", 10)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    t_ns = 1_700_000_000_000_000_000
    for n in counts:
        det = Detections(np.concatenate([rng.uniform(-50, 50, (n, 3)), rng.uniform(0.5, 5, (n, 3)),
                                         rng.uniform(-3, 3, (n, 3))], axis=1), rng.uniform(0.1, 1, n),
                         rng.integers(0, len(CLASS_NAMES), n), CLASS_NAMES)
        stages: dict[str, list[float]] = {k: [] for k in ("sync", "frame", "encode", "publish", "total")}
        for k in range(sets + 2):  # two warm-up sets
            t_ns += 83_000_000
            for cam, img, info in zip(NUSCENES_CAMERAS, images, infos):
                img.header.stamp = f.time(t_ns + 5_000_000 * NUSCENES_CAMERAS.index(cam))
                builder.set_camera_info(cam, info)
            t0 = time.perf_counter()
            ready = []
            for cam, img in zip(NUSCENES_CAMERAS, images):
                ready += sync.add(cam, stamp_to_ns(img.header.stamp), img)
            t1 = time.perf_counter()
            built = builder.build(ready[-1])
            assert built.frame is not None, built.problems
            t2 = time.perf_counter()
            det_b = detection_array_cdr(Detections(det.boxes, det.scores, det.labels, det.class_names, ready[-1].stamp_ns),
                                        "base_link")
            mk_b = marker_array_cdr(det, "base_link")
            t3 = time.perf_counter()
            pub_det.publish(det_b)
            pub_mk.publish(mk_b)
            t4 = time.perf_counter()
            if k >= 2:
                for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                    stages[key].append(dt * 1e3)
        out[str(n)] = {k: _median(v) for k, v in stages.items()}
    node.destroy_node()
    rclpy.shutdown()
    builder.close()
    return out


def _latency(sets: int, rate: float, checkpoint: Path | None, profile: bool, reliable: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="simdistill-bench-ros-") as tmp:
        if checkpoint is None:
            import torch

            from simdistill_ros.core.checkpoint import save_checkpoint
            from simdistill_ros.core.config import load_preset
            from simdistill_ros.core.model.student import Student

            cfg = load_preset("tiny")
            torch.manual_seed(0)
            checkpoint = save_checkpoint(Path(tmp) / "tiny.pt", Student(cfg.model, cfg.geometry).state_dict(), cfg)
        node_bin = Path(sys.executable).with_name("detector_node")
        log = open(Path(tmp) / "node.log", "wb")
        proc = subprocess.Popen([str(node_bin), "--ros-args", "--params-file", str(REPO_CONFIG / "detector.param.yaml"),
                                 "-p", f"model:={checkpoint}", "-p", "debug_latency:=true",
                                 "-p", f"reliable:={'true' if reliable else 'false'}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            return _measure(proc, sets, rate, profile, reliable, Path(tmp) / "node.log")
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def _measure(proc: subprocess.Popen, sets: int, rate: float, profile: bool, reliable: bool, log: Path) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from simdistill_ros.core.config import NUSCENES_CAMERAS
    from simdistill_ros.ros.convert import MessageFactory, python_module_lookup, stamp_to_ns

    f = MessageFactory(python_module_lookup)
    sensor_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data

    rclpy.init()
    node = rclpy.create_node("simdistill_bench_peer")
    images, infos, tf = _sample_messages(f)
    pub_img = [node.create_publisher(f.cls("sensor_msgs/msg/Image"), f"/{c.lower()}/image_raw", sensor_qos)
               for c in NUSCENES_CAMERAS]
    pub_info = [node.create_publisher(f.cls("sensor_msgs/msg/CameraInfo"), f"/{c.lower()}/camera_info", sensor_qos)
                for c in NUSCENES_CAMERAS]
    pub_tf = node.create_publisher(f.cls("tf2_msgs/msg/TFMessage"), "/tf_static",
                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                              durability=DurabilityPolicy.TRANSIENT_LOCAL))
    received: dict[int, float] = {}
    inference: list[float] = []
    arrivals: list[int] = []
    lock = threading.Lock()

    def on_det(msg: Any) -> None:
        now = time.time_ns()
        with lock:
            received[stamp_to_ns(msg.header.stamp)] = now
            arrivals.append(stamp_to_ns(msg.header.stamp))

    def on_inf(msg: Any) -> None:
        with lock:
            inference.append(float(msg.data))

    node_side: list[float] = []

    def on_lat(msg: Any) -> None:
        with lock:
            node_side.append(float(msg.data))

    node.create_subscription(f.cls("vision_msgs/msg/Detection3DArray"), "/detector_node/detections", on_det, 10)
    node.create_subscription(f.cls("std_msgs/msg/Float64"), "/detector_node/debug/inference_ms", on_inf, 10)
    node.create_subscription(f.cls("std_msgs/msg/Float64"), "/detector_node/debug/latency_ms", on_lat, 10)
    diag: dict[str, dict[str, str]] = {}

    def on_diag(msg: Any) -> None:
        with lock:
            for st in msg.status:
                if st.name in ("detector_node: synchronisation", "detector_node: processing"):
                    diag[st.name.split(": ")[1]] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(f.cls("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=lambda: _spin(executor, rclpy), daemon=True)
    spin.start()
    deadline = time.monotonic() + 120
    while not (node.count_publishers("/detector_node/detections") and all(p.get_subscription_count() for p in pub_img)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"detector_node did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pub_tf.publish(tf)
    time.sleep(1.0)
    sent: list[int] = []
    for k in range(sets + 2):
        stamp = time.time_ns()
        for i, (img, info) in enumerate(zip(images, infos)):
            info.header.stamp = img.header.stamp = f.time(stamp + i * 1000)  # fired together, 1 us apart
            pub_info[i].publish(info)
            pub_img[i].publish(img)
        if k >= 2:
            sent.append(stamp)
        time.sleep(1.0 / rate)
    time.sleep(3.0)
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    with lock:
        inf_by_stamp = dict(zip(arrivals, inference))
        lat_by_stamp = dict(zip(arrivals, node_side))
        at_node = [lat_by_stamp[s] - inf_by_stamp[s] for s in sent if s in lat_by_stamp and s in inf_by_stamp]
        lat = [(received[s] - s) / 1e6 for s in sent if s in received]
        net = [(received[s] - s) / 1e6 - inf_by_stamp[s] for s in sent if s in received and s in inf_by_stamp]
        inf = [inf_by_stamp[s] for s in sent if s in inf_by_stamp]
    if not lat:
        print(f"bench-ros: no detections received; node log:\n{log.read_text()[-3000:]}", file=sys.stderr)
    return {"profile": profile, "qos": "reliable" if reliable else "best-effort", "sets_sent": len(sent), "sets_received": len(lat),
            "latency_ms_median": _median(lat), "inference_ms_median": _median(inf),
            "latency_minus_inference_ms_median": _median(net),
            "latency_minus_inference_ms_max": max(net) if net else float("nan"),
            "at_node_publication_minus_inference_ms_median": _median(at_node),
            "node_sync": {k: diag.get("synchronisation", {}).get(k) for k in ("emitted_sets", "dropped_missing_camera",
                                                                             "dropped_skew")},
            "node_skipped_sets": diag.get("processing", {}).get("skipped_sets")}


def _spin(executor: Any, rclpy: Any) -> None:
    while rclpy.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:
            return


def _child_env(part: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    if part == "latency-profile":
        env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="SYSTEM_DEFAULT",
                   FASTDDS_DEFAULT_PROFILES_FILE=str(REPO_CONFIG / "fastdds_single_host.xml"))
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    else:
        env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


def main(args: argparse.Namespace) -> int:
    if args._child:
        if args._child == "overhead":
            result: Any = _overhead(args.sets, args.detections)
        else:
            result = _latency(args.sets, args.rate, args.checkpoint, args._child == "latency-profile",
                              args.qos == "reliable")
        print(json.dumps(result))
        return 0
    if args.json:
        from training.fsutil import check_absent

        check_absent(args.json, args.force)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": os.getloadavg()[0]}}
    for part in args.parts:
        cmd = [sys.executable, "-m", "simdistill_ros.cli", "bench-ros", "--_child", part, "--sets", str(args.sets),
               "--rate", str(args.rate), "--qos", args.qos, "--detections", *map(str, args.detections)]
        if args.checkpoint:
            cmd += ["--checkpoint", str(args.checkpoint)]
        print(f"bench-ros: {part} ...", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(part), timeout=1800)
        if out.returncode != 0:
            raise ValueError(f"bench-ros part {part} failed:\n{out.stderr[-3000:]}")
        if out.stderr.strip():
            print(out.stderr.strip()[-3000:], file=sys.stderr)
        results[part] = json.loads(out.stdout.strip().splitlines()[-1])
    results["machine"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    _print(results)
    if args.json:
        from training.fsutil import write_bytes_atomic

        write_bytes_atomic((json.dumps(results, indent=2) + "\n").encode(), args.json, force=args.force)
    return 0


def _print(results: dict[str, Any]) -> None:
    if "overhead" in results:
        print("node overhead per six-camera 1600x900 rgb8 set (median ms)")
        print(f"{'detections':>10} {'sync':>7} {'frame':>7} {'encode':>7} {'publish':>8} {'total':>7}")
        for n, r in results["overhead"].items():
            print(f"{n:>10} {r['sync']:7.3f} {r['frame']:7.3f} {r['encode']:7.3f} {r['publish']:8.3f} {r['total']:7.3f}")
    for part in ("latency", "latency-profile"):
        if part in results:
            r = results[part]
            print(f"{part} ({r['qos']}): {r['sets_received']}/{r['sets_sent']} sets, latency {r['latency_ms_median']:.1f} ms, "
                  f"inference {r['inference_ms_median']:.1f} ms, latency - inference "
                  f"{r['latency_minus_inference_ms_median']:.1f} ms (max {r['latency_minus_inference_ms_max']:.1f}), "
                  f"of which before the node's publication {r['at_node_publication_minus_inference_ms_median']:.1f} ms; "
                  f"node: {r['node_sync']}, skipped {r['node_skipped_sets']}")
