"""`simdistill ablation --out DIR`: the toy-scale replication of SimDistill's ablation on a synthetic world.

One command: generate a synthetic world (or reuse --world), train the teacher, the camera-only baseline
(the same student, no distillation) and the SimDistill student with several seeds, and the single
ablations without CMD, without GCM and without MMD-P; evaluate each with the devkit on the world's
held-out val split; write DIR/ablation.json and DIR/ablation.md (mAP, NDS, mATE per row: mean, sample
standard deviation and range over seeds, with the exact command and the machine), and optionally the
same table to a docs file (--doc).

Every run is an ordinary `simdistill train` run folder under DIR/runs/<row>-seed<k>. A finished run is
reused and an interrupted one resumed, so re-running the same command continues where it stopped.
The baseline's image encoder starts from the teacher's, exactly as the student's, so baseline and
SimDistill differ only in the distillation losses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from simdistill_ros.core.cpu_threads import add_threads_argument, apply_threads
from training.config import TrainConfig, load_train_config
from training.fsutil import check_absent, write_bytes_atomic
from training.loop import TrainRequest, train
from training.machine import machine_description
from training.run_state import RunDir, format_command

METRICS = ("mAP", "NDS", "mATE", "car AP", "car ATE")
SUMMARY_METRICS = ("mAP", "NDS", "mATE")  # a run's own evaluation summary; the car figures come from its metrics.json
DELTA_METRICS = ("car AP", "car ATE", "NDS")


@dataclass(frozen=True)
class Row:
    """One table row: its name, stage, how it changes the config, and how many seeds it runs."""

    name: str
    stage: str
    seeds: int

    def config(self, base: TrainConfig) -> TrainConfig:
        losses = base.losses
        if self.name == "w/o CMD":
            return dataclasses.replace(base, losses=dataclasses.replace(losses, cmd=dataclasses.replace(losses.cmd, enabled=False)))
        if self.name == "w/o MMD-P":
            return dataclasses.replace(base, losses=dataclasses.replace(losses, mmd_p=dataclasses.replace(losses.mmd_p, enabled=False)))
        if self.name == "w/o GCM":
            return dataclasses.replace(base, gcm=False)
        return base

    @property
    def slug(self) -> str:
        return self.name.lower().replace("w/o ", "no-").replace(" ", "-")


def rows(seeds: int, ablation_seeds: int) -> list[Row]:
    return [Row("teacher", "teacher", 1), Row("baseline", "baseline", seeds), Row("SimDistill", "student", seeds),
            Row("w/o CMD", "student", ablation_seeds), Row("w/o GCM", "student", ablation_seeds),
            Row("w/o MMD-P", "student", ablation_seeds)]


def _summary(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if n else None,
            "std": statistics.stdev(values) if n > 1 else None,
            "min": min(values) if n else None, "max": max(values) if n else None}


def _cell(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f}–{s['max']:.4f})"


def render_markdown(report: dict[str, Any]) -> str:
    """The docs table: one row per model, mean ± sample std (min–max) over seeds."""
    lines = ["# Toy-scale ablation on the synthetic world", "",
             f"Command: `{report['command']}`", "",
             f"World: {report['world']['description']}. Evaluation: nuScenes devkit (`detection_cvpr_2019`) on "
             f"the world's held-out val split ({report['world']['val_samples']} samples). Model preset "
             f"`{report['preset']}`; students train {report['epochs']['student']} epochs, the teacher "
             f"{report['epochs']['teacher']}.", "",
             "| model | seeds | " + " | ".join(METRICS) + " | " + " | ".join(f"Δ{m} vs baseline" for m in DELTA_METRICS) + " |",
             "|---|---:|" + "---|" * (len(METRICS) + len(DELTA_METRICS))]
    for row in report["rows"]:
        cells = " | ".join(_cell(row["summary"][m]) for m in METRICS)
        delta = row.get("delta_vs_baseline")
        deltas = " | ".join(_cell(delta[m]) if delta else "" for m in DELTA_METRICS)
        lines.append(f"| {row['name']} | {row['summary']['mAP']['n']} | {cells} | {deltas} |")
    m = report["machine"]
    lines += ["", "Cells: mean ± sample standard deviation (min–max) over seeds; one seed shows the value alone. "
              "Δ columns: the row minus the baseline of the same seed (same initialisation and data order), "
              "over the seeds both have. car AP and car ATE are the devkit's per-class figures for the commonest "
              "class. Read mATE and NDS with care when mAP is near zero: the devkit gives a class whose recall "
              "never reaches 10 % a TP error of 1.0, so a model that detects fewer classes can score a lower "
              "mATE without localising anything better; car ATE is measured only where cars were matched.",
              "", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_GiB']} GiB, GPU {m['gpu'] or 'none'}, "
              f"torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}, {m['os']}. "
              f"Load average at start {report['load_start']}, at end {m['load_average']} "
              f"(above the core count means other jobs shared the CPU).",
              f"Started {report['started']}; wall time {report['wall_s'] / 60:.1f} min "
              f"(per run: " + ", ".join(f"{r['run']} " + ("reused" if r["wall_s"] is None else f"{r['wall_s']:.0f} s")
                                        for r in report["runs"]) + "; a reused run had finished in an earlier "
              "invocation and was not trained again)."]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the world, the runs and the report")
    parser.add_argument("--config", default="ablation", help="training config (name in config/train/ or YAML path)")
    parser.add_argument("--world", type=Path, default=None, help="reuse this synthetic dataroot instead of generating one")
    parser.add_argument("--scenes", type=int, default=20, help="scenes of a generated world (20%% are val)")
    parser.add_argument("--samples-per-scene", type=int, default=10)
    parser.add_argument("--image-size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"))
    parser.add_argument("--sweeps", type=int, default=3, help="LiDAR sweeps between key frames of a generated world")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the baseline and SimDistill rows")
    parser.add_argument("--ablation-seeds", type=int, default=1, help="seeds of each single-ablation row")
    parser.add_argument("--teacher-epochs", type=int, default=8,
                        help="epochs of the teacher (the students train the config's schedule.epochs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=None, help="override data.workers (and world rendering)")
    add_threads_argument(parser, help="torch CPU threads of this process (the teacher); --jobs processes share "
                                       "them (default: torch's choice, one per core)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train the runs after the teacher in this many processes side by side (e.g. 2 on a "
                             "2-core CPU, each with one thread)")
    parser.add_argument("--doc", type=Path, default=None, help="also write the table here (e.g. docs/ablation.md)")
    parser.add_argument("--force", action="store_true", help="replace an existing --doc file")
    parser.add_argument("--no-progress", action="store_true")


def _world(args: argparse.Namespace, version: str) -> Path:
    if args.world is not None:
        if not (args.world / version / "sample.json").is_file():
            raise FileNotFoundError(f"--world {args.world} holds no {version} tables (sample.json)")
        return args.world
    world = args.out / "world"
    if (world / "splits.json").is_file():
        return world
    from training.data.synth import generate

    workers = args.workers if args.workers else (os.cpu_count() or 1)
    return generate(world, args.scenes, args.samples_per_scene, args.world_seed, image_size=tuple(args.image_size),
                    sweeps=args.sweeps, version=version, workers=workers, progress=not args.no_progress)


def _train_run(row: Row, seed: int, config: TrainConfig, world: Path, runs: Path, teacher: Path | None,
               device: str, progress: bool, command: str, teacher_epochs: int) -> tuple[Path, dict[str, Any], float | None]:
    """Train (or resume, or reuse) one run; the wall time is None for a run that had already finished."""
    out = runs / f"{row.slug}-seed{seed}"
    cfg = dataclasses.replace(row.config(config), seed=seed)
    if row.stage == "teacher":
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, epochs=teacher_epochs,
                                                                    eval_every=teacher_epochs))
    resume = (out / "run.json").is_file()
    finished = resume and RunDir(out).final_model(row.stage).is_file()
    t0 = time.perf_counter()
    req = TrainRequest(stage=row.stage, config=cfg, dataroot=world, out=out, teacher=teacher, resume=resume,
                       device=device, progress=progress, command=command)
    result = train(req)
    return result.final_model, result.metrics, None if finished else time.perf_counter() - t0


def _car_metrics(run: Path, metrics: dict[str, Any]) -> dict[str, float | None]:
    """car AP and car ATE from the devkit's metrics.json of the run's last evaluation (None without one)."""
    epoch = metrics.get("epoch")
    path = RunDir(run).eval_dir(int(epoch)) / "metrics" / "metrics.json" if epoch is not None else None
    if path is None or not path.is_file():
        return {"car AP": None, "car ATE": None}
    car = json.loads(path.read_text())["per_class"].get("car", {})
    return {"car AP": car.get("AP"), "car ATE": car.get("ATE")}


def _job(threads: int, *run_args: Any) -> tuple[Path, dict[str, Any], float | None]:
    """One run in a worker process of --jobs: its own torch thread count, then an ordinary training run."""
    torch.set_num_threads(threads)
    return _train_run(*run_args)


def _train_students(plan: list[tuple[Row, int]], args: argparse.Namespace, config: TrainConfig, world: Path,
                    runs_dir: Path, teacher: Path, command: str) -> dict[tuple[str, int], tuple[Path, dict[str, Any], float | None]]:
    """Every run after the teacher, in order (--jobs 1) or in --jobs spawned processes side by side.

    The runs are independent (each reads only the world and the teacher checkpoint) and seeded, so a run
    gives the same weights whichever process trains it. Side by side, each process gets this process's torch
    thread count (--threads, or torch's default) divided by --jobs, at least one, and no progress bar; a line
    per finished run is printed instead.
    """
    if args.jobs == 1:
        return {(row.name, seed): _train_run(row, seed, config, world, runs_dir, teacher, args.device,
                                             not args.no_progress, command, args.teacher_epochs)
                for row, seed in plan}
    threads = max(1, torch.get_num_threads() // args.jobs)
    results: dict[tuple[str, int], tuple[Path, dict[str, Any], float | None]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_job, threads, row, seed, config, world, runs_dir, teacher, args.device, False,
                               command, args.teacher_epochs): (row, seed) for row, seed in plan}
        for future in as_completed(futures):
            row, seed = futures[future]
            results[(row.name, seed)] = result = future.result()
            metrics, wall = result[1], result[2]
            print(f"ablation: {row.slug}-seed{seed} " + ("reused" if wall is None else f"finished in {wall:.0f} s") + ": "
                  + ", ".join(f"{m} {metrics.get(m, float('nan')):.4f}" for m in SUMMARY_METRICS), flush=True)
    return results


def main(args: argparse.Namespace) -> int:
    if args.seeds < 1 or args.ablation_seeds < 1 or args.teacher_epochs < 1 or args.jobs < 1:
        raise ValueError("--seeds, --ablation-seeds, --teacher-epochs and --jobs must be >= 1")
    if args.doc is not None:
        check_absent(args.doc, args.force, "--doc file")
    apply_threads(args.threads)
    config = load_train_config(args.config)
    if args.workers is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, workers=args.workers))
    if config.schedule.eval_every == 0 or config.schedule.epochs % config.schedule.eval_every:
        config = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule,
                                                                          eval_every=config.schedule.epochs))
    command = format_command("simdistill ablation", args)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    version = config.data.version
    world = _world(args, version)
    runs_dir = args.out / "runs"
    plan = [(row, seed) for row in rows(args.seeds, args.ablation_seeds) for seed in range(row.seeds)]
    teacher_row, seed0 = plan[0]
    results = {(teacher_row.name, seed0): _train_run(teacher_row, seed0, config, world, runs_dir, None, args.device,
                                                     not args.no_progress, command, args.teacher_epochs)}
    # the baseline gets the teacher too: its encoder starts from the teacher's, nothing is distilled
    teacher_ckpt = results[(teacher_row.name, seed0)][0]
    results.update(_train_students(plan[1:], args, config, world, runs_dir, teacher_ckpt, command))
    report_rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for row in rows(args.seeds, args.ablation_seeds):
        per_seed = []
        for seed in range(row.seeds):
            _, metrics, wall = results[(row.name, seed)]
            per_seed.append({"seed": seed, **{m: metrics.get(m) for m in SUMMARY_METRICS},
                             **_car_metrics(runs_dir / f"{row.slug}-seed{seed}", metrics)})
            runs.append({"run": f"{row.slug}-seed{seed}", "wall_s": wall})
        summary = {m: _summary([float(s[m]) for s in per_seed if s[m] is not None]) for m in METRICS}
        entry: dict[str, Any] = {"name": row.name, "stage": row.stage, "seeds": per_seed, "summary": summary}
        if row.stage == "student" and report_rows and report_rows[1]["name"] == "baseline":
            base = {s["seed"]: s for s in report_rows[1]["seeds"]}
            entry["delta_vs_baseline"] = {
                m: _summary([float(s[m]) - float(base[s["seed"]][m]) for s in per_seed
                             if s["seed"] in base and s[m] is not None and base[s["seed"]][m] is not None])
                for m in METRICS}
        report_rows.append(entry)
    from training.data.nuscenes import build_infos

    val = build_infos(world, version, config.data.val_split)
    splits = json.loads((world / "splits.json").read_text())
    report = {
        "command": command, "started": started, "wall_s": time.perf_counter() - t0, "load_start": load_start,
        "machine": machine_description(), "config": config.model, "runs": runs, "rows": report_rows,
        "preset": config.detector_config().name,
        "epochs": {"student": config.schedule.epochs, "teacher": args.teacher_epochs},
        "world": {"path": str(world), "val_samples": len(val),
                  "description": f"{len(splits['train'])} train + {len(splits['val'])} val scenes at {world}"},
    }
    write_bytes_atomic(json.dumps(report, indent=2).encode(), args.out / "ablation.json", force=True)
    text = render_markdown(report)
    write_bytes_atomic(text.encode(), args.out / "ablation.md", force=True)
    if args.doc is not None:
        write_bytes_atomic(text.encode(), args.doc, force=args.force)
    print(text)
    return 0
