"""`benchmarks/index.yaml` read into typed entries: each recipe with its purpose, goal, hardware and
recorded result paths. The folder it indexes is passed in, so tests and `llmserve bench` agree."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

INDEX_FILE = "index.yaml"
RESULTS_DIR = "results"


class Recipe(BaseModel):
    """One runnable benchmark in `benchmarks/`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    purpose: str = Field(description="What it measures, in one line.")
    goal: str = Field(description="The issue or goal whose figures it produces.")
    needs: str = Field(description="The hardware it runs on: GPUs, CPU, running servers.")
    usage: str = Field(description="How it is run from the repository root.")
    script: str = Field("", description="Its file in benchmarks/; default `<name>.py`.")
    results: tuple[str, ...] = Field((), description="Its recorded results, relative to benchmarks/results/.")

    @property
    def script_name(self) -> str:
        return self.script or f"{self.name}.py"


def default_benchmarks_dir() -> Path:
    """`benchmarks/` of the checkout this package runs from (an editable install or PYTHONPATH)."""
    return Path(__file__).resolve().parents[2] / "benchmarks"


def load_index(benchmarks_dir: Path) -> list[Recipe]:
    data = yaml.safe_load((benchmarks_dir / INDEX_FILE).read_text())
    return [Recipe(name=name, **entry) for name, entry in data["recipes"].items()]


def find_recipe(recipes: list[Recipe], name: str) -> Recipe | None:
    """The recipe called `name` (a script name with its extension also matches)."""
    return next((r for r in recipes if name in (r.name, r.script_name)), None)
