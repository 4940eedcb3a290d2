"""The on-disk cache of sample infos (training.data.nuscenes.build_infos): an `.npz` of plain arrays (no
pickle) with a fingerprint that changes when the request, the cache format or a source file changes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.fsutil import write_bytes_atomic

CACHE_FORMAT = 1


def fingerprint(request: Sequence[Any], stat_files: Sequence[Path], content_files: Sequence[Path] = ()) -> str:
    """Changes when the request (JSON-able), the cache format, the size or mtime of a stat_file or the
    bytes of a content_file change."""
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_FORMAT, *request]).encode())
    for p in stat_files:
        st = p.stat()
        h.update(f"{p.stem}:{st.st_size}:{st.st_mtime_ns}".encode())
    for p in content_files:
        h.update(p.read_bytes())
    return h.hexdigest()


def default_cache_dir(dataroot: Path) -> Path:
    """DATAROOT/.simdistill_cache when writable, else ~/.cache/simdistill_ros/<hash of dataroot>."""
    d = dataroot / ".simdistill_cache"
    if os.access(dataroot, os.W_OK) or d.is_dir() and os.access(d, os.W_OK):
        return d
    tag = hashlib.sha1(str(dataroot.resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "simdistill_ros" / tag


def cache_path(dataroot: str | os.PathLike[str], version: str, split: str, max_sweeps: int,
               cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache file of (version, split, max_sweeps) in cache_dir (default: default_cache_dir)."""
    root = Path(dataroot)
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    return d / f"infos_{version}_{split}_sweeps{max_sweeps}.npz"


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays (one of them the 'fingerprint') atomically, replacing an older cache."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(buf.getvalue(), path, force=True)


def load(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if the file exists, is readable and matches the fingerprint; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
