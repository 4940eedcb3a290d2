"""training.fsutil: atomic folder / file publishing with umask permissions, refusal without force."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.fsutil import atomic_dir, check_absent, write_bytes_atomic


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_dir_permissions_force_and_no_temporaries(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "sub" / "out"
    with atomic_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.is_dir() and not list(tmp.iterdir())
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    assert _mode(out) == 0o777 & ~umask  # as a plain mkdir, not mkdtemp's 0o700
    with pytest.raises(FileExistsError, match="pass --force"):
        with atomic_dir(out):
            pytest.fail("entered without force")
    with atomic_dir(out, force=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"] and _mode(out) == 0o777 & ~umask
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "c.txt").write_text("three")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # a failure keeps the old folder
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temporary or trash folder left


def test_atomic_dir_refuses_an_output_that_appears_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FileExistsError):
        with atomic_dir(out) as tmp:
            (tmp / "mine.txt").write_text("x")
            out.mkdir()
            (out / "theirs.txt").write_text("y")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_bytes_atomic(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "d" / "f.json"
    write_bytes_atomic(b"one", path)
    assert path.read_bytes() == b"one" and _mode(path) == 0o666 & ~umask  # as open(), not mkstemp's 0o600
    with pytest.raises(FileExistsError):
        write_bytes_atomic(b"two", path)
    assert write_bytes_atomic(b"two", path, force=True).read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]
    check_absent(tmp_path / "nothing", force=False)
    check_absent(path, force=True)
    with pytest.raises(FileExistsError, match=f"output {path} exists"):
        check_absent(path, force=False)


def test_temporaries_of_dead_processes_are_removed_on_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    out = tmp_path / "world"
    stale = tmp_path / f".world.tmp-{dead_pid}-abc123"
    (stale / "samples").mkdir(parents=True)
    stale_file = tmp_path / f".results.json.tmp-{dead_pid}-abc123"
    stale_file.write_text("{")
    live = tmp_path / f".world.tmp-{os.getppid()}-def456"  # a running process: must be left alone
    live.mkdir()
    other = tmp_path / f".world2.tmp-{dead_pid}-abc123"  # another output's temporary: not ours to remove
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    write_bytes_atomic(b"{}", tmp_path / "results.json")
    assert not stale.exists() and not stale_file.exists()
    assert live.exists() and other.exists() and (out / "x").exists()


def test_sigterm_during_synth_leaves_no_temporary(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "world"
    proc = subprocess.Popen([sys.executable, "-m", "simdistill_ros.cli", "synth", "--out", str(out), "--scenes", "4",
                             "--samples-per-scene", "20", "--seed", "0", "--image-size", "450", "800", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".world.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(tmp_path.glob(".world.tmp-*")), "the generator never started writing"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == [], "a terminated run leaves nothing behind"
