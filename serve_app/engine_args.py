"""vLLM engine arguments from our config, and the device a replica runs on."""
from __future__ import annotations

import os
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs

from serve_app.config import AppConfig


def engine_args_from_config(config: AppConfig, overrides: dict[str, Any] | None = None) -> AsyncEngineArgs:
    engine = config.engine
    args: dict[str, Any] = {
        "model": str(config.model.resolved_path()),
        "served_model_name": config.model.served_name,
        "quantization": None if config.model.quantization in ("auto", "none") else config.model.quantization,
        "dtype": engine.activation_dtype(on_gpu=config.replicas.num_gpus > 0),
        "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "kv_cache_dtype": engine.kv_cache_dtype,
        "enforce_eager": engine.enforce_eager,
        "enable_prefix_caching": engine.enable_prefix_caching,
        # Priority classes map onto vLLM's own priority scheduling inside each engine.
        "scheduling_policy": "priority",
        "disable_log_stats": False,
        # No prompt or request parameters (stop strings are user text) in the engine's log;
        # `engine.extra` may turn it on deliberately for debugging.
        "enable_log_requests": False,
        "stream_interval": engine.stream_interval,
    }
    args.update(engine.pinned_batch_args)
    if engine.speculative is not None:
        args["speculative_config"] = engine.speculative.vllm_config(config.model.cache_dir)
    args.update(engine.extra)
    args.update(overrides or {})
    return AsyncEngineArgs(**args)


def detect_device():
    """This replica's own device: its GPU's memory (replicas may sit on different GPU types) or the CPU."""
    import torch

    from serve_app.policy.batch_controller import DeviceInfo

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return DeviceInfo("cuda", torch.cuda.get_device_name(), total, free)
    kv_gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4") or 4)  # vLLM's CPU default is 4 GiB
    return DeviceInfo("cpu", "cpu", 0, 0, int(kv_gib * 1024**3))
