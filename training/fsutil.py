"""Atomic outputs: a folder or file is written under a temporary name beside its destination and renamed
into place, so a failure never leaves a half-written output behind.

Temporaries are named `.<name>.tmp-<pid>-<random>`; a later write of the same output removes those whose
process no longer runs (a run killed with SIGKILL cannot clean up after itself; SIGTERM is turned into
a normal exit by the `simdistill` command, so its cleanup runs).

The temporaries are created with mkdir / open's default modes (0o777 / 0o666, minus the umask), so a
published output has the permissions of a plain mkdir / open, not tempfile's owner-only 0o700 / 0o600.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import BinaryIO
from contextlib import contextmanager
from pathlib import Path


def check_absent(path: str | os.PathLike[str], force: bool, what: str = "output") -> None:
    """FileExistsError when `path` exists and not force."""
    if not force and os.path.lexists(path):
        raise FileExistsError(f"{what} {path} exists; pass --force to replace it")


def _temp_name(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(dest: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries of `dest` left by processes that no longer run; returns what was removed."""
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*-*"):
        pid = tmp.name[len(f".{dest.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_dir(out: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside `out`. When the block succeeds the folder is renamed
    onto `out` (an existing `out` is moved aside first and deleted after); when it fails the folder is
    deleted and `out` is untouched. An existing `out` is an error unless force (checked on entry and
    again before the rename)."""
    out = Path(out)
    check_absent(out, force, "output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    while True:
        tmp = _temp_name(out)
        try:
            tmp.mkdir()  # mode 0o777 & ~umask, as any mkdir
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if not os.path.lexists(out):
            os.replace(tmp, out)
        else:
            check_absent(out, force, "output folder")
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike[str], force: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file open on a temporary beside `path` (mode 0o666 & ~umask, as any open); when the
    block succeeds it is renamed onto `path`, when it fails it is deleted. An existing file is an error
    unless force."""
    path = Path(path)
    check_absent(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    while True:
        tmp = _temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str], force: bool = False) -> Path:
    """Write `data` to `path` via a temporary file beside it and a rename (atomic_file)."""
    with atomic_file(path, force) as f:
        f.write(data)
    return Path(path)
