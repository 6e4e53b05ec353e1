"""Where a replica's start goes, read from a server's log: vLLM's own phase lines (weights, Dynamo,
compilation, memory profiling, CUDA graphs, engine init) and ours (engine ready). Pure: text in,
seconds out; a phase the log does not mention is absent (e.g. no compilation with `enforce_eager`)."""
from __future__ import annotations

import re
from datetime import datetime

# vLLM 0.26-0.32 wording; each pattern's group is seconds. Summed where a phase repeats (one line per
# compiled shape range, one per engine-core process).
PHASE_PATTERNS: dict[str, str] = {
    "weights_load_s": r"Loading weights took ([\d.]+) seconds",
    "model_load_s": r"Model loading took [\d.]+ GiB(?: memory)? and ([\d.]+) seconds",
    "dynamo_transform_s": r"Dynamo bytecode transform time: ([\d.]+) s",
    "graph_compile_s": r"Compiling a graph for (?:dynamic shape|compile range \([^)]*\)|general shape) takes ([\d.]+) s",
    "torch_compile_total_s": r"torch\.compile (?:takes|took) ([\d.]+) s in total",
    "memory_profiling_s": r"Memory profiling takes ([\d.]+) seconds",
    "cuda_graph_capture_s": r"Graph capturing finished in ([\d.]+) secs",
    "engine_init_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
    "replica_engine_ready_s": r"engine ready in ([\d.]+)s",
}
CACHE_HIT_PATTERN = r"Directly load the compiled graph"
# Ray Serve's own lines, with full timestamps: the replica's start as autoscaling sees it, from Serve
# adding it to the application being ready (process and Ray start before that are a local run's only).
TIMESTAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
REPLICA_ADDED = TIMESTAMP + r" controller \d+ -- Adding \d+ replicas? to Deployment\(name='LLMReplica'"
APP_READY = TIMESTAMP + r" serve \d+ -- Application '[^']+' is ready"


def start_phases(log_text: str) -> dict[str, float | bool]:
    phases: dict[str, float | bool] = {}
    for name, pattern in PHASE_PATTERNS.items():
        values = [float(value) for value in re.findall(pattern, log_text)]
        if values:
            phases[name] = round(sum(values), 2)
    phases["compile_cache_hit"] = re.search(CACHE_HIT_PATTERN, log_text) is not None
    added, ready = re.search(REPLICA_ADDED, log_text), re.search(APP_READY, log_text)
    if added and ready:
        phases["replica_added_to_ready_s"] = round((_when(ready.group(1)) - _when(added.group(1))).total_seconds(), 1)
    return phases


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")


KV_CACHE_TOKENS = r"GPU KV cache size: ([\d,]+) tokens"


def kv_cache_tokens(log_text: str) -> int | None:
    """The KV cache vLLM allocated (tokens), as its first replica reported it."""
    found = re.search(KV_CACHE_TOKENS, log_text)
    return int(found.group(1).replace(",", "")) if found else None
