"""Ray actor options of an LLM replica, the same locally and in the KubeRay manifests: its CPUs and
GPUs, and its environment (the CPU build's KV cache size, the compile caches' directory, how the engine
process starts, the config's own `replicas.env`, which wins)."""
from __future__ import annotations

from typing import Any

from serve_app.compile_cache import compile_cache_env
from serve_app.config import AppConfig
from serve_app.engine_forkserver import ENV_FLAG as ENGINE_FORKSERVER_FLAG

CPU_KV_CACHE_GIB = "1"


def replica_env(config: AppConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    if config.replicas.num_gpus == 0:
        env["VLLM_CPU_KVCACHE_SPACE"] = CPU_KV_CACHE_GIB
    if config.engine.compile_cache_dir:
        env.update(compile_cache_env(config.engine.compile_cache_dir))
    if config.replicas.engine_process_start == "forkserver":
        env[ENGINE_FORKSERVER_FLAG] = "1"
    return {**env, **config.replicas.env}


def replica_actor_options(config: AppConfig) -> dict[str, Any]:
    replicas = config.replicas
    return {"num_cpus": replicas.num_cpus, "num_gpus": replicas.num_gpus,
            "runtime_env": {"env_vars": replica_env(config)}}
