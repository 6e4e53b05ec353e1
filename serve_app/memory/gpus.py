"""GPU total memory as CUDA reports it (cudaMemGetInfo total, what vLLM multiplies by utilization)."""

from __future__ import annotations

import re

MiB = 1 << 20

# Driver-reported totals sit below the marketing size (and below nvidia-smi,
# which includes driver-reserved memory) and move by a few MiB across drivers.
KNOWN_GPUS: dict[str, int] = {
    # Measured: cuDeviceTotalMem on H100 80GB HBM3, driver 580.159.04 (79.18 GiB);
    # public torch reports range 81,082-81,090 MiB.
    "H100-80GB": 85_017_493_504,
    "H200": 143_156 * MiB,  # 139.80 GiB, torch report for "NVIDIA H200" (141 GB)
    "A100-80GB": 81_050 * MiB,  # ~79.15 GiB from vLLM startup logs; approximate
    "A100-40GB": 40_536 * MiB,  # torch report for A100-SXM4-40GB
    "L40S": 45_589 * MiB,  # torch report for NVIDIA L40S (48 GB)
    "A10G": 22_587 * MiB,  # torch report for NVIDIA A10G (24 GB)
    "L4": 22_579 * MiB,  # ~22.05 GiB; approximate, by analogy with A10G
}

_ALIASES = {"H100": "H100-80GB", "A100": "A100-80GB", "H200-141GB": "H200"}

_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*$", re.IGNORECASE)


def _key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper().removeprefix("NVIDIA"))


_LOOKUP = {_key(k): v for k, v in KNOWN_GPUS.items()} | {
    _key(alias): KNOWN_GPUS[target] for alias, target in _ALIASES.items()
}


def gpu_memory_bytes(name_or_size: str | int) -> int:
    """Total bytes for a known GPU name ("H100-80GB", "nvidia h200") or a size ("80GiB", "24GB").

    GB/MB are decimal (SI) and GiB/MiB binary; a bare number is bytes.
    """
    if isinstance(name_or_size, int):
        if name_or_size <= 0:
            raise ValueError("GPU memory must be positive")
        return name_or_size
    known = _LOOKUP.get(_key(name_or_size))
    if known is not None:
        return known
    match = _SIZE_RE.match(name_or_size)
    if match is None:
        raise ValueError(
            f"not a known GPU or size: {name_or_size!r}; known GPUs: {', '.join(KNOWN_GPUS)}"
        )
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]
    if value <= 0:
        raise ValueError("GPU memory must be positive")
    return int(value)
