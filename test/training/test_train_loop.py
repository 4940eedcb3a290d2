"""The training loop end to end on the tiny synthetic world with a two-camera small model: the three
stages through `simdistill train`, loss going down, exact resume after a kill, bf16 autocast on CPU, the
student checkpoint in a Detector, and every bad input of the issue (each leaves the checkpoints alone)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train_helpers
from simdistill_ros.cli import main as cli_main
from simdistill_ros.core.checkpoint import load_checkpoint
from simdistill_ros.core.config import DetectorConfig
from simdistill_ros.core.detector import Detector
from simdistill_ros.core.types import Frame
from training import loop
from training.loop import TrainingError, TrainRequest, train
from training.teacher.checkpoint import save_teacher
from training.teacher.model import Teacher

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def detector_config(small_config: DetectorConfig) -> DetectorConfig:
    return train_helpers.two_camera(small_config)


@pytest.fixture(scope="module")
def teacher_run(one_thread: None, tiny_world: Path, detector_config: DetectorConfig,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained for one step through the command line."""
    folder = tmp_path_factory.mktemp("teacher")
    train_helpers.train_config(folder, detector_config)
    out = folder / "run"
    assert cli_main(["train", "--stage", "teacher", "--config", str(train_helpers.config_path(folder)), "--dataroot",
                     str(tiny_world), "--out", str(out), "--no-progress"]) == 0
    return out


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_student_distils_logs_every_term_and_deploys(teacher_run: Path, tiny_world: Path,
                                                      detector_config: DetectorConfig, tmp_path: Path) -> None:
    cfg = train_helpers.train_config(tmp_path, detector_config, schedule={"eval_every": 1})
    result = train(TrainRequest("student", cfg, tiny_world, tmp_path / "run", teacher=teacher_run / "teacher.pt",
                                progress=False))
    lines = _lines(tmp_path / "run")
    step = lines[0]
    assert {"imd", "cmd", "mmd_f", "mmd_p.cls", "mmd_p.reg", "heatmap.t0", "bbox.t5", "loss", "lr",
            "samples_per_s", "grad_norm"} <= set(step)
    assert step["loss"] == pytest.approx(sum(v for k, v in step.items() if k.startswith(("heatmap", "bbox", "imd", "cmd", "mmd"))), rel=1e-5)
    assert "eval" in lines[-1] and set(result.metrics) >= {"mAP", "NDS", "mATE"}
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    # the image encoder started from the teacher's and trained at 0.1x the lr
    assert step["lr_encoder"] == pytest.approx(0.1 * step["lr"])
    # deployable: the core checkpoint format, loaded by a Detector, detecting on a frame of the world
    config, _, meta = load_checkpoint(result.final_model)
    assert config == detector_config and meta["stage"] == "student"
    det = Detector.from_checkpoint(result.final_model)
    frame, *_ = train_helpers.load_frame(tiny_world, "v1.0-trainval", 0)
    keep = [i for i, c in enumerate(frame.calibrations) if c.name in train_helpers.CAMERAS]
    out = det.detect(Frame(tuple(frame.images[i] for i in keep), tuple(frame.calibrations[i] for i in keep)))
    assert out.boxes.shape[1] == 9 and np.isfinite(out.boxes).all()


def test_a_few_steps_lower_the_loss(tiny_world: Path, detector_config: DetectorConfig, tmp_path: Path) -> None:
    # CBGS turns the 3 training samples into an epoch of 30 (each class balanced); 9 steps of it
    cfg = train_helpers.train_config(tmp_path, detector_config, data={"augment": False, "cbgs": True},
                                     schedule={"max_steps_per_epoch": 9})
    train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "run", progress=False))
    losses = [line["loss"] for line in _lines(tmp_path / "run")]
    assert len(losses) == 9
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[1]


def test_a_killed_run_resumes_to_exactly_the_same_weights(tiny_world: Path, detector_config: DetectorConfig,
                                                          tmp_path: Path) -> None:
    cfg = train_helpers.train_config(tmp_path, detector_config, data={"augment": True},
                                     schedule={"epochs": 2, "accumulate": 2, "max_steps_per_epoch": 1})
    whole = train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "whole", progress=False))

    def kill_in_epoch_2(epoch: int, step: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "killed", progress=False), on_step=kill_in_epoch_2)
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    resumed = train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "killed", resume=True, progress=False))
    a, b = _weights(whole.final_model), _weights(resumed.final_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the logs of the resumed run are those of the uninterrupted one
    drop = ("samples_per_s",)
    strip = [{k: v for k, v in line.items() if k not in drop} for line in _lines(tmp_path / "whole")]
    assert [{k: v for k, v in line.items() if k not in drop} for line in _lines(tmp_path / "killed")] == strip

    # bad input: a truncated newest checkpoint is named, with the previous one, and nothing is deleted
    newest = tmp_path / "killed" / "checkpoints" / "epoch_0002.pt"
    newest.write_bytes(newest.read_bytes()[:20000])
    with pytest.raises(ValueError, match=r"epoch_0002.pt is corrupted or truncated.*epoch_0001.pt"):
        train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "killed", resume=True, progress=False))
    assert newest.exists() and (tmp_path / "killed" / "checkpoints" / "epoch_0001.pt").exists()
    # bad input: an output folder that holds another run
    with pytest.raises(FileExistsError, match="already holds another run .stage baseline"):
        train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "whole", progress=False))
    # bad input: resuming with another config names the field
    other = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=0.5))
    with pytest.raises(ValueError, match=r"optim.lr: 0.001 -> 0.5"):
        train(TrainRequest("baseline", other, tiny_world, tmp_path / "whole", resume=True, progress=False))


def test_bf16_autocast_training_step_on_cpu(teacher_run: Path, tiny_world: Path, detector_config: DetectorConfig,
                                            tmp_path: Path) -> None:
    cfg = train_helpers.train_config(tmp_path, detector_config, schedule={"precision": "bf16"})
    result = train(TrainRequest("student", cfg, tiny_world, tmp_path / "run", teacher=teacher_run / "teacher.pt",
                                progress=False))
    line = _lines(tmp_path / "run")[0]
    assert np.isfinite(line["loss"]) and np.isfinite(line["grad_norm"]) and line["grad_norm"] > 0
    assert result.global_step == 1


def test_non_finite_loss_and_out_of_memory_stop_with_a_message(tiny_world: Path, detector_config: DetectorConfig,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = train_helpers.train_config(tmp_path, detector_config, schedule={"epochs": 2})
    real = loop.Trainer._micro_batch

    def nan_in_epoch_2(self: loop.Trainer, batch: dict) -> dict:
        terms = real(self, batch)
        if self.global_step >= 1:
            terms["bbox.t0"] = terms["bbox.t0"] * float("nan")
        return terms

    monkeypatch.setattr(loop.Trainer, "_micro_batch", nan_in_epoch_2)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 2 step 1 .global step 2.: total=nan.*"
                                            r"bbox.t0=nan.*epoch_0001.pt is kept"):
        train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "nan", progress=False))
    kept = torch.load(tmp_path / "nan" / "checkpoints" / "epoch_0001.pt", weights_only=True)
    assert kept["epoch"] == 1 and not (tmp_path / "nan" / "checkpoints" / "epoch_0002.pt").exists()

    def oom(self: loop.Trainer, batch: dict) -> dict:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop.Trainer, "_micro_batch", oom)
    with pytest.raises(TrainingError, match=r"out of memory in epoch 1 .*schedule.batch_size 1 per process.*lower "
                                            r"schedule.batch_size and raise schedule.accumulate"):
        train(TrainRequest("baseline", cfg, tiny_world, tmp_path / "oom", progress=False))


def test_teacher_needs_lidar_and_a_matching_teacher(tiny_world: Path, detector_config: DetectorConfig,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = train_helpers.train_config(tmp_path, detector_config)
    # a dataroot whose LiDAR blobs were not downloaded
    no_lidar = tmp_path / "no_lidar"
    shutil.copytree(tiny_world, no_lidar, ignore=shutil.ignore_patterns("LIDAR_TOP", ".simdistill_cache"))
    with pytest.raises(FileNotFoundError, match=r"teacher training needs LiDAR, but (\d+) of \1 LiDAR files .*missing"):
        train(TrainRequest("teacher", cfg, no_lidar, tmp_path / "t", progress=False))
    # a teacher for another geometry: the command names the field and exits with status 2
    geo = dataclasses.replace(detector_config.geometry, depth_step=2.0)
    other = dataclasses.replace(detector_config, geometry=geo)
    bad = save_teacher(tmp_path / "other_teacher.pt", Teacher(other.model, other.geometry, cfg.lidar), other)
    code = cli_main(["train", "--stage", "student", "--config", str(train_helpers.config_path(tmp_path)), "--dataroot",
                     str(tiny_world), "--out", str(tmp_path / "s"), "--teacher", str(bad), "--no-progress"])
    assert code == 2
    assert "does not match the student config (1 field(s)): geometry.depth_step: teacher 2.0, student 4.0" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="--stage student needs --teacher"):
        train(TrainRequest("student", cfg, tiny_world, tmp_path / "s2", progress=False))
