"""Leftover vLLM shared-memory segments: only new, unused ones are removed."""
from __future__ import annotations

from pathlib import Path

from serve_app.shared_memory import mapped_segments, remove_orphaned_segments, vllm_segments


def test_removes_only_segments_created_since_start_and_not_in_use(tmp_path: Path):
    older = tmp_path / "psm_older"
    in_use = tmp_path / "psm_in_use"
    orphan = tmp_path / "psm_orphan"
    unrelated = tmp_path / "sem.mp-123"
    for path in (older, in_use, orphan, unrelated):
        path.write_bytes(b"x")
    before = {older}
    removed = remove_orphaned_segments(before, shm_dir=tmp_path, in_use={in_use})
    assert removed == [orphan]
    assert vllm_segments(tmp_path) == {older, in_use}
    assert unrelated.exists()


def test_a_segment_this_process_maps_counts_as_in_use():
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert Path("/dev/shm") / segment.name in mapped_segments()
    finally:
        segment.close()
        segment.unlink()
