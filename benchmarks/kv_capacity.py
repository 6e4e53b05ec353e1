"""GPU check for the memory budget: predicted KV token capacity vs what vLLM allocates.

For each synthetic shape: make the checkpoint, read this GPU's memory, predict with
`serve_app.memory.plan_memory`, start vLLM's engine with the same settings and compare.

    python benchmarks/kv_capacity.py --out DIR [--shapes llama2-7b,llama3-8b]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path


async def measure(shape_name: str, model_dir: Path, max_model_len: int, utilization: float) -> dict:
    import torch
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    from serve_app.memory import ModelShape, compare_with_vllm, plan_memory
    from serve_app.synthetic_model import ensure_model

    ensure_model(shape_name, model_dir)
    free, total = torch.cuda.mem_get_info()
    hf = json.loads((model_dir / "config.json").read_text())
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(model=str(model_dir), max_model_len=max_model_len, gpu_memory_utilization=utilization,
                        dtype="float16"),
        usage_context=UsageContext.OPENAI_API_SERVER)
    try:
        config = engine.vllm_config
        blocks, block_size = config.cache_config.num_gpu_blocks, config.cache_config.block_size
        batched = config.scheduler_config.max_num_batched_tokens
        seqs = config.scheduler_config.max_num_seqs
    finally:
        engine.shutdown()
    budget = plan_memory(ModelShape.from_hf_config(hf), total, utilization, max_model_len, batched,
                         block_size=block_size, max_num_seqs=seqs)
    result = compare_with_vllm(budget.kv_tokens, blocks, block_size)
    return {"shape": shape_name, "gpu_total_bytes": total, "gpu_free_bytes_at_start": free,
            "max_model_len": max_model_len, "gpu_memory_utilization": utilization,
            "max_num_batched_tokens": batched, "max_num_seqs": seqs,
            "predicted_kv_tokens": budget.kv_tokens, "vllm_kv_tokens": blocks * block_size,
            "vllm_num_blocks": blocks, "block_size": block_size, "relative_error": result.relative_error,
            "within_3_percent": result.within_tolerance(0.03),
            "predicted_terms_gib": {k: getattr(budget, k) / 1024**3 for k in
                                    ("weights", "activation", "non_torch", "cuda_graph", "kv_cache_bytes")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", default="llama2-7b,llama3-8b")
    parser.add_argument("--models", type=Path, default=Path("/tmp/models"))
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch
    import vllm

    rows = []
    for shape in args.shapes.split(","):
        started = time.monotonic()
        row = asyncio.run(measure(shape, args.models / shape, args.max_model_len, args.gpu_memory_utilization))
        row["seconds"] = time.monotonic() - started
        rows.append(row)
        print(f"{shape}: predicted {row['predicted_kv_tokens']:,} vs vLLM {row['vllm_kv_tokens']:,} tokens "
              f"({100 * row['relative_error']:+.2f}%)", flush=True)
        (args.out / "kv_capacity.json").write_text(json.dumps({
            "benchmark": "kv_capacity", "gpu": torch.cuda.get_device_name(), "vllm": vllm.__version__,
            "command": "python benchmarks/kv_capacity.py " + shlex.join(sys.argv[1:]), "results": rows}, indent=2))
    return 0 if all(r["within_3_percent"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
