"""One direction of import between our top-level packages: autoscaling may import serve_app, never
the reverse, and no other cycle. Read from the source with `ast`, so an import inside a function (a
lazy one) counts as much as one at the top of a file. Ray Serve reaches our autoscaling policy by
its import-path string, and `llmserve autoscale` by an entry point: neither is an import here."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serve_app", "autoscaling", "benchmarks")


def _imported_top_levels(path: Path, package: str) -> list[tuple[str, int]]:
    """(top-level name, line) of every import in the file, relative ones resolved within `package`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((package if node.level else (node.module or "").split(".")[0], node.lineno))
    return found


def package_imports() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> ["file:line", ...], among `PACKAGES`."""
    graph: dict[str, dict[str, list[str]]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for target, line in _imported_top_levels(path, package):
                if target in PACKAGES and target != package:
                    graph[package].setdefault(target, []).append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for target in graph[node]:
            if target == path[0]:
                cycles.append(path + [target])
            elif target not in path and target > path[0]:  # each cycle once, from its smallest name
                visit(target, path + [target])

    for start in graph:
        visit(start, [start])
    return cycles


def test_serve_app_imports_nothing_from_autoscaling():
    assert package_imports()["serve_app"].get("autoscaling", []) == []


def test_no_import_cycle_between_top_level_packages():
    graph = package_imports()
    assert _cycles(graph) == [], {node: {t: where[:3] for t, where in edges.items()} for node, edges in graph.items()}


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from . import sibling\n\ndef f():\n    import autoscaling.signals as s\n"
                      "    from autoscaling import llm_policy\n")
    assert _imported_top_levels(source, "serve_app") == [("serve_app", 1), ("autoscaling", 4), ("autoscaling", 5)]
    assert _cycles({"a": {"b": []}, "b": {"a": []}, "c": {"a": []}}) == [["a", "b", "a"]]
