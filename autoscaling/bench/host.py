"""This machine, as a benchmark sees it: timestamped log lines, the GPU's name and memory use, archives."""
from __future__ import annotations

import subprocess
import tarfile
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def checkout_commit() -> str:
    """The short commit of the checkout a benchmark runs from (its report says which code it measured)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def gpu_name() -> str:
    """`nvidia-smi`'s "name, memory.total" per GPU (one line each), or "unknown" without it."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def gpu_label() -> str:
    """The first GPU's line, or "cpu" where there is none."""
    name = gpu_name().splitlines()
    return name[0] if name and name[0] != "unknown" else "cpu"


def first_gpu_memory_used_mib(nvidia_smi_output: str) -> float | None:
    """`nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits` prints one line per GPU."""
    for line in nvidia_smi_output.splitlines():
        try:
            return float(line.strip())
        except ValueError:
            continue
    return None


def read_gpu_memory_used_mib() -> float | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return first_gpu_memory_used_mib(done.stdout)


def archive(directory: Path, tar_path: Path) -> None:
    """One .tar.gz of a folder of raw logs and bench JSONs, so a result folder stays a few files."""
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    log(f"archived {directory} -> {tar_path} ({tar_path.stat().st_size / 1e6:.1f} MB)")
