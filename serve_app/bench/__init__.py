"""Pieces the benchmarks share that must be importable by Ray workers (deployment classes)."""
