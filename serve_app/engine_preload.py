"""What the engine fork server (`serve_app.engine_forkserver`) imports before it forks an engine process.

The modules `vllm serve`'s API server has imported when it forks its engine (vLLM's default outside Ray):
nothing here starts CUDA, which a process forked afterwards could not use. `EXTRA_ENV` names more, comma-
separated (the engine's worker and model modules save more time, if they leave CUDA alone on that build).
A module that fails to import is left to the engine process, which imports it again and says why.
"""
from __future__ import annotations

import importlib
import os
import sys

ENGINE_MODULES = ("torch", "transformers", "vllm.v1.engine.core", "vllm.v1.executor.uniproc_executor")
EXTRA_ENV = "LLMSERVE_ENGINE_PRELOAD_EXTRA"


def modules_to_preload(environ: dict[str, str]) -> list[str]:
    extra = [name.strip() for name in environ.get(EXTRA_ENV, "").split(",") if name.strip()]
    return [*ENGINE_MODULES, *extra]


for _name in modules_to_preload(dict(os.environ)):
    try:
        importlib.import_module(_name)
    except Exception as error:  # noqa: BLE001 - the engine process imports it again and reports the error
        print(f"engine fork server: could not preload {_name}: {error!r}", file=sys.stderr)
if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
    print("engine fork server: a preloaded module started CUDA; engine processes forked from here will fail "
          f"(leave it out of {EXTRA_ENV} or set replicas.engine_process_start: spawn)", file=sys.stderr)
