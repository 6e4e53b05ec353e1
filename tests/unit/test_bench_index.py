"""benchmarks/index.yaml and the folder it indexes stay in step: every recipe listed, every recorded
result listed by a recipe, every listed path present."""
from __future__ import annotations

from pathlib import Path

from autoscaling.bench.index import RESULTS_DIR, default_benchmarks_dir, find_recipe, load_index

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_package_finds_this_checkouts_benchmarks():
    assert default_benchmarks_dir() == BENCHMARKS


def test_every_script_in_benchmarks_is_a_recipe_in_the_index():
    indexed = {recipe.script_name for recipe in load_index(BENCHMARKS)}
    scripts = {path.name for path in BENCHMARKS.iterdir() if path.suffix in (".py", ".sh")}
    assert scripts - indexed == set(), "add these to benchmarks/index.yaml"
    assert indexed - scripts == set(), "the index names scripts that are not there"


def test_every_recorded_result_is_listed_by_a_recipe_and_every_listed_path_exists():
    results = BENCHMARKS / RESULTS_DIR
    listed = [path for recipe in load_index(BENCHMARKS) for path in recipe.results]
    assert [path for path in listed if not (results / path).exists()] == []
    unlisted = {entry.name for entry in results.iterdir()} - {Path(path).parts[0] for path in listed}
    assert unlisted == set(), "list these under a recipe's results in benchmarks/index.yaml"


def test_each_recipe_says_what_it_is_for_and_what_it_needs():
    for recipe in load_index(BENCHMARKS):
        assert recipe.purpose and recipe.goal and recipe.needs and recipe.usage, recipe.name


def test_a_recipe_is_found_by_name_or_script():
    recipes = load_index(BENCHMARKS)
    assert find_recipe(recipes, "priority_vs_vllm").script_name == "priority_vs_vllm.py"
    assert find_recipe(recipes, "profile_priority_run.sh").name == "profile_priority_run"
    assert find_recipe(recipes, "no_such_recipe") is None
