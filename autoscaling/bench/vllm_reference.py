"""The setup every comparison with `vllm serve` shares: one synthetic checkpoint, one served name,
the same engine settings on both sides, and the command that starts each server."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from autoscaling.bench.host import log

SERVED_NAME = "llama2-7b-awq"
ENGINE = {"max_model_len": 2048, "gpu_memory_utilization": 0.9}


def ensure_checkpoint(model_dir: Path, shape: str) -> None:
    """The synthetic `shape` checkpoint at `model_dir`, made first if it is missing (minutes for a 7B)."""
    from serve_app.synthetic_model import ensure_model

    started = time.monotonic()
    ensure_model(shape, model_dir)
    log(f"synthetic {shape} at {model_dir} ready after {time.monotonic() - started:.0f}s")


def vllm_serve_command(model_dir: Path, port: int, extra: list[str] | None = None) -> list[str]:
    """`vllm serve` with the engine settings our config gives its replicas."""
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir),
            "--served-model-name", SERVED_NAME, "--port", str(port), "--host", "127.0.0.1",
            "--max-model-len", str(ENGINE["max_model_len"]),
            "--gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"]),
            "--dtype", "float16", "--scheduling-policy", "priority", "--enable-prefix-caching", *(extra or [])]


def ours_serve_command(config: dict, config_path: Path) -> list[str]:
    """`llmserve run` on `config`, written to `config_path` first (it stays beside the results)."""
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [sys.executable, "-m", "serve_app.cli", "run", "--config", str(config_path)]
