"""benchmarks/gpu_compile_cache.sh: the caches an engine start leaves in their default places go into parts
small enough to come back from the GPU host, and a restore on a fresh machine puts them back where the
engines look; with nothing carried a restore does nothing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_compile_cache.sh"


def _run(verb: str, folder: Path, home: Path) -> str:
    env = {**os.environ, "HOME": str(home), "TORCHINDUCTOR_CACHE_DIR": str(home / "inductor")}
    env.pop("VLLM_CACHE_ROOT", None)
    env.pop("TRITON_CACHE_DIR", None)
    return subprocess.run(["bash", str(SCRIPT), verb, str(folder)], check=True, capture_output=True, text=True,
                          env=env).stdout


def test_saved_caches_come_back_in_place_on_a_fresh_machine(tmp_path):
    home = tmp_path / "home"
    compiled = home / ".cache" / "vllm" / "torch_compile_cache" / "rank_0" / "graph.py"
    kernel = home / ".triton" / "cache" / "k1" / "kernel.cubin"
    for path, data in ((compiled, b"graph"), (kernel, os.urandom(20_000_000))):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    parts_dir = tmp_path / "out"
    said = _run("save", parts_dir, home)
    parts = sorted(parts_dir.glob("compile_cache.tgz.part*"))
    assert len(parts) == 2 and all(p.stat().st_size <= 15_000_000 for p in parts), said
    kernel_bytes = kernel.read_bytes()
    subprocess.run(["rm", "-rf", str(home)], check=True)  # the next session's machine has none of it
    _run("restore", parts_dir, home)
    assert compiled.read_bytes() == b"graph"
    assert kernel.read_bytes() == kernel_bytes


def test_a_restore_with_nothing_carried_leaves_the_machine_as_it_is(tmp_path):
    said = _run("restore", tmp_path / "absent", tmp_path / "home")
    assert "the first start compiles" in said
    assert not (tmp_path / "home").exists()
