#!/usr/bin/env python3
"""The detection loss each ablation run ended its training with, as a markdown table.

    python scripts/ablation_train_losses.py runs/ablation/runs [--last 8]

At toy scale the camera-only rows score a devkit mAP near zero, so the val metrics of `simdistill ablation`
cannot separate them. The training detection loss (heatmap focal + box L1 over all tasks, the distillation
terms left out) is a less noisy signal of how well each student fits: baseline and SimDistill runs with
the same seed see the same batches in the same order, so their difference is paired. It is a training-set
figure, not a held-out one. Reads each run's metrics.jsonl (one line per logged step) and averages the
last --last logged steps (8 = the last epoch of the default ablation, logged every 10 of 80 steps).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

ROW_OF = {"teacher": "teacher", "baseline": "baseline", "simdistill": "SimDistill", "no-cmd": "w/o CMD",
          "no-gcm": "w/o GCM", "no-mmd-p": "w/o MMD-P"}


def detection_loss(record: dict[str, float]) -> float:
    return sum(v for k, v in record.items() if k.startswith(("heatmap.", "bbox.")))


def run_losses(metrics: Path, last: int) -> dict[str, float]:
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [s for s in steps if "loss" in s][-last:]
    if not steps:
        raise ValueError(f"{metrics} has no logged training step")
    out = {"det": statistics.fmean(detection_loss(s) for s in steps)}
    for term in ("imd", "cmd", "mmd_f", "mmd_p.cls", "mmd_p.reg"):
        if term in steps[-1]:
            out[term] = statistics.fmean(s[term] for s in steps)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the ablation's runs/ folder")
    parser.add_argument("--last", type=int, default=8, help="logged steps to average at the end of each run")
    args = parser.parse_args()
    per_row: dict[str, dict[int, dict[str, float]]] = {}
    for run in sorted(args.runs.iterdir()):
        m = re.fullmatch(r"(.+)-seed(\d+)", run.name)
        if m is None or m.group(1) not in ROW_OF or not (run / "metrics.jsonl").is_file():
            continue
        per_row.setdefault(ROW_OF[m.group(1)], {})[int(m.group(2))] = run_losses(run / "metrics.jsonl", args.last)
    base = per_row.get("baseline", {})
    print("| model | seeds | detection loss (train, last epoch) | Δ vs baseline, same seed | CMD | IMD | MMD-F |")
    print("|---|---:|---|---|---:|---:|---:|")
    for name in ROW_OF.values():
        seeds = per_row.get(name)
        if not seeds:
            continue
        det = [s["det"] for s in seeds.values()]
        deltas = [seeds[k]["det"] - base[k]["det"] for k in seeds if k in base and name not in ("baseline", "teacher")]

        def cell(values: list[float]) -> str:
            if not values:
                return ""
            if len(values) == 1:
                return f"{values[0]:.3f}"
            return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} ({min(values):.3f}–{max(values):.3f})"

        def term(key: str) -> str:
            vals = [s[key] for s in seeds.values() if key in s]
            return f"{statistics.fmean(vals):.3f}" if vals else ""

        print(f"| {name} | {len(det)} | {cell(det)} | {cell(deltas)} | {term('cmd')} | {term('imd')} | {term('mmd_f')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
