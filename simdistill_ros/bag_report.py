"""The report of a bag replay: nuScenes metrics through the devkit (training/evaluate's dataroot-free path),
latency percentiles per stage, dropped and partial sets, read problems; as report.json, a terminal table
and PNG pictures. An app module (it imports training), used by `simdistill bag replay` and the demo.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from simdistill_ros.bag.pictures import draw_bev, draw_cameras
from simdistill_ros.bag.replay import STAGES, ReplayResult, percentiles
from simdistill_ros.core.types import Detections


def score(gt: dict[int, Detections], preds: dict[int, Detections]) -> dict[str, Any]:
    """mAP, NDS, TP errors and per-class metrics of predictions against ground truth, both keyed by key
    frame stamp and in the same frame (the devkit's DetectionEval, config detection_cvpr_2019)."""
    from training.evaluate import evaluate_boxes

    return evaluate_boxes({str(t): d for t, d in gt.items()}, {str(t): d for t, d in preds.items()})


def build_report(result: ReplayResult, source: dict[str, Any]) -> dict[str, Any]:
    """The report.json content. metrics is None when the bag has no ground truth."""
    metrics = None
    if result.gt_aligned:
        m = score(result.gt_aligned, result.predictions())
        metrics = {k: v for k, v in m.items() if k != "devkit"}
    unmatched = sorted(t for t, s in result.matches.items() if s is None)
    frames = len(result.emitted)
    return {
        **source,
        "sets": {"detected": frames, "dropped_by_frame_builder": len(result.sets) - frames, **result.sync,
                 "drop_reasons": dict(result.build_drops.most_common())},
        "refused_messages": dict(result.refused_messages.most_common()),
        "ground_truth": {"key_frames": len(result.gt), "key_frames_without_a_set": len(unmatched),
                         "alignment": result.gt_alignment},
        "metrics": metrics,
        "latency_ms": {s: percentiles(result.latency_ms[s]) for s in STAGES},
        "throughput_fps": frames / result.wall_s if result.wall_s > 0 else None,
        "wall_s": result.wall_s,
        "bag_read": result.read.as_dict(),
        "output_bag_counts": result.output_counts,
    }


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(report: dict[str, Any]) -> str:
    """A readable summary for the terminal."""
    lines = []
    s = report["sets"]
    lines.append(f"sets: {s['detected']} detected ({s['partial']} partial); dropped: {s['dropped_missing']} missing a "
                 f"camera, {s['dropped_skew']} over max skew, {s['dropped_by_frame_builder']} by the frame builder "
                 "(calibration, TF, image)")
    for reason, n in list(s["drop_reasons"].items())[:5]:
        lines.append(f"  {n} x {reason}")
    m = report["metrics"]
    if m is None:
        lines.append("metrics: the bag has no /gt/detections")
    else:
        g = report["ground_truth"]
        lines.append(f"metrics on {g['key_frames']} key frames ({g['key_frames_without_a_set']} without a set; "
                     f"{g['alignment']}):")
        lines.append(f"  mAP {_f(m['mAP'], '.4f')}  NDS {_f(m['NDS'], '.4f')}  " +
                     "  ".join(f"{k} {_f(m.get(k))}" for k in ("mATE", "mASE", "mAOE", "mAVE", "mAAE")))
        lines.append(f"  {'class':<22}{'AP':>7}{'ATE':>7}{'ASE':>7}{'AOE':>7}{'AVE':>7}{'AAE':>7}")
        for name, c in m["per_class"].items():
            lines.append(f"  {name:<22}{_f(c['AP']):>7}" + "".join(f"{_f(c.get(k)):>7}" for k in
                                                                  ("ATE", "ASE", "AOE", "AVE", "AAE")))
    lines.append(f"latency (ms)  {'p50':>8}{'p90':>8}{'p99':>8}")
    for stage, p in report["latency_ms"].items():
        lines.append(f"  {stage:<12}{_f(p['p50'], '8.1f')}{_f(p['p90'], '8.1f')}{_f(p['p99'], '8.1f')}")
    lines.append(f"throughput: {_f(report['throughput_fps'], '.2f')} sets/s over {report['wall_s']:.1f} s")
    r = report["bag_read"]
    if r["first_bad_record"] or r["unknown_types"]:
        lines.append(f"bag problems: {r['first_bad_record'] or 'none'}; unknown types skipped: "
                     f"{r['unknown_types'] or 'none'}; undecodable records: {r['undecodable'] or 'none'}")
    return "\n".join(lines)


def write_report_files(out_dir: Path, report: dict[str, Any], result: ReplayResult) -> list[str]:
    """report.json and the pictures (bev_<stamp>.png, cameras_<stamp>.png) of the kept sets into an existing
    folder; returns the picture file names."""
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    names = []
    by_set = {s: t for t, s in result.matches.items() if s is not None}
    for rec in result.sets:
        if rec.frame is None or rec.det is None:
            continue
        t_gt = by_set.get(rec.stamp_ns)
        gt = result.gt_aligned.get(t_gt) if t_gt is not None else None
        title = f"set {rec.stamp_ns / 1e9:.3f} s" + (f", key frame {t_gt / 1e9:.3f} s" if t_gt else "")
        draw_bev(out_dir / f"bev_{rec.stamp_ns}.png", rec.det, gt, title)
        draw_cameras(out_dir / f"cameras_{rec.stamp_ns}.png", rec.frame, rec.det, gt)
        names += [f"bev_{rec.stamp_ns}.png", f"cameras_{rec.stamp_ns}.png"]
    return names


def write_report(out_dir: str | os.PathLike[str], report: dict[str, Any], result: ReplayResult,
                 force: bool = False) -> list[Path]:
    """write_report_files into a new folder, atomically (an existing one only with force)."""
    from training.fsutil import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force) as tmp:
        names = write_report_files(tmp, report, result)
    return [out_dir / n for n in names]
