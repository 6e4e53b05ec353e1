"""vLLM's shared-memory segments (`/dev/shm/psm_*`, 160-250 MB each) that outlive their engine.

vLLM's engine processes exchange inputs and outputs through POSIX shared memory; a process that is
killed rather than shut down (Ray stopping its workers, a replica crash) leaves its segments in
/dev/shm, where they hold RAM until reboot. `llmserve run` removes, when it stops, the segments
that appeared while it ran and that no live process maps any more.
"""
from __future__ import annotations

import os
from pathlib import Path

from serve_app.telemetry.log_names import service_logger

logger = service_logger("shared_memory")
SHM_DIR = Path("/dev/shm")
VLLM_SEGMENT_GLOB = "psm_*"  # Python's multiprocessing.shared_memory names, which vLLM uses


def vllm_segments(shm_dir: Path = SHM_DIR) -> set[Path]:
    return set(shm_dir.glob(VLLM_SEGMENT_GLOB)) if shm_dir.is_dir() else set()


def mapped_segments(proc_dir: Path = Path("/proc")) -> set[Path]:
    """Shared-memory files some live process has mapped or open."""
    mapped: set[Path] = set()
    for pid_dir in proc_dir.glob("[0-9]*"):
        try:
            for line in (pid_dir / "maps").read_text().splitlines():
                path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                if path.startswith(str(SHM_DIR) + "/"):
                    mapped.add(Path(path.removesuffix(" (deleted)")))
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(str(SHM_DIR) + "/"):
                    mapped.add(Path(target))
        except OSError:  # the process ended while we looked, or is not ours to read
            continue
    return mapped


def remove_orphaned_segments(existed_before: set[Path], shm_dir: Path = SHM_DIR,
                             in_use: set[Path] | None = None) -> list[Path]:
    """Remove segments created since `existed_before` that no live process uses; returns them."""
    in_use = mapped_segments() if in_use is None else in_use
    removed = []
    for segment in sorted(vllm_segments(shm_dir) - existed_before - in_use):
        try:
            segment.unlink()
            removed.append(segment)
        except FileNotFoundError:
            continue
        except OSError as error:
            logger.warning("cannot remove %s: %s", segment, error)
    if removed:
        logger.info("removed %d shared-memory segments left by stopped engines", len(removed))
    return removed
