"""The router core's contract: RouterCore implements every member with the same signature, and the
shells that drive a core (the dispatcher, the simulator) use only the contract, never private members
or a subclass that overrides them."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

from serve_app.policy.router_contract import RouterContract
from serve_app.policy.router_core import RouterCore

REPO = Path(__file__).resolve().parents[2]
CONTRACT = sorted(RouterContract.__abstractmethods__)
# Files that hold a core as `self._core`; each must call only what the contract offers.
SHELLS = [REPO / "serve_app/deployments/dispatcher.py", REPO / "autoscaling/simulator/cluster.py"]


def test_router_core_implements_every_contract_member_with_the_same_signature():
    assert issubclass(RouterCore, RouterContract) and not RouterCore.__abstractmethods__
    assert {"admit", "take_dispatches", "finish", "cancel", "expire", "stats"} <= set(CONTRACT)
    for name in CONTRACT:
        promised, actual = inspect.getattr_static(RouterContract, name), inspect.getattr_static(RouterCore, name)
        assert actual is not promised, f"RouterCore does not implement {name}"
        if isinstance(promised, property):
            assert isinstance(actual, property), f"{name} must stay a property"
            continue
        assert inspect.signature(actual) == inspect.signature(promised), f"{name}'s signature differs"


def _python_files() -> list[Path]:
    return [path for top in ("serve_app", "autoscaling", "benchmarks", "scripts", "tests")
            for path in sorted((REPO / top).rglob("*.py"))]


def _base_names(node: ast.ClassDef) -> set[str]:
    return {base.id if isinstance(base, ast.Name) else base.attr
            for base in node.bases if isinstance(base, (ast.Name, ast.Attribute))}


def test_nothing_subclasses_router_core():
    subclasses = [f"{path.relative_to(REPO)}:{node.lineno}" for path in _python_files()
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ClassDef) and "RouterCore" in _base_names(node)]
    assert subclasses == []


def _core_members_used(path: Path) -> set[str]:
    """Attributes read from `self._core` in one file."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "_core" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def test_the_dispatcher_and_the_simulator_use_only_the_contract():
    for path in SHELLS:
        used = _core_members_used(path)
        assert used, f"{path.name} no longer holds its core as self._core: update this test"
        assert used <= set(CONTRACT), f"{path.relative_to(REPO)} uses {sorted(used - set(CONTRACT))}"
