"""A description of the machine a measurement ran on (for docs tables): CPU model, cores, memory, GPU,
torch and its thread count, and the load average, which says whether other jobs shared the CPU."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_description() -> dict[str, Any]:
    """CPU model, cores, memory, GPU, torch and its threads, and the load average (shared or not)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_GiB": mem_gib, "gpu": gpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "os": platform.platform(terse=True), "load_average": list(os.getloadavg())}
