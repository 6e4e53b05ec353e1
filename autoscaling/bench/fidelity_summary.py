"""The differential test's verdict as a result summary: how many cases of the matrix
(serve_app/fidelity_matrix.py) answered as `vllm serve` does, against the goal that all do."""
from __future__ import annotations

import httpx

from serve_app.fidelity import FidelityReport

GOAL = "differential test: bodies, status codes and error type/param match vllm serve"


def served_model(reference_url: str) -> str:
    """The first model the reference serves (`vllm serve` serves one)."""
    models = httpx.get(f"{reference_url.rstrip('/')}/v1/models", timeout=30).raise_for_status().json()
    return models["data"][0]["id"]


def fidelity_summary(report: FidelityReport, command: str, gpu: str) -> dict:
    total = len(report.results)
    return {"gpu": gpu, "commands": [command],
            "goals": [{"name": GOAL, "measured": f"{report.matched} of {total} cases match",
                       "goal": "all cases match", "met": report.matched == total}]}
