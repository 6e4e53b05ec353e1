"""GPU name / size parsing."""

import pytest

from serve_app.memory.gpus import KNOWN_GPUS, gpu_memory_bytes

GiB = 1 << 30


def test_h100_is_measured_driver_total():
    assert gpu_memory_bytes("H100-80GB") == 85_017_493_504
    assert 79.1 < gpu_memory_bytes("H100-80GB") / GiB < 79.2


def test_names_are_case_and_punctuation_insensitive():
    assert gpu_memory_bytes("nvidia h100 80gb") == gpu_memory_bytes("H100_80GB") == KNOWN_GPUS["H100-80GB"]
    assert gpu_memory_bytes("a10g") == KNOWN_GPUS["A10G"]


def test_h200_usable_is_about_139_8_gib():
    assert abs(gpu_memory_bytes("H200") / GiB - 139.8) < 0.05


def test_known_gpus_slightly_below_marketing_size():
    marketing_gb = {"H100-80GB": 80, "H200": 141, "A100-80GB": 80, "A100-40GB": 40,
                    "L4": 24, "A10G": 24, "L40S": 48}
    assert set(marketing_gb) == set(KNOWN_GPUS)
    for name, gb in marketing_gb.items():
        # Marketing "GB" here means GiB of HBM/GDDR; the driver keeps a few percent.
        assert 0.9 * gb * GiB < KNOWN_GPUS[name] < gb * GiB, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [("80GiB", 80 * GiB), ("24GB", 24 * 10**9), ("1.5 GiB", 3 * GiB // 2),
     ("512MiB", 512 << 20), ("1000", 1000), ("2tb", 2 * 10**12)],
)
def test_size_strings(text, expected):
    assert gpu_memory_bytes(text) == expected


def test_int_passthrough_and_errors():
    assert gpu_memory_bytes(12345) == 12345
    with pytest.raises(ValueError, match="known GPUs"):
        gpu_memory_bytes("RTX-9090")
    with pytest.raises(ValueError):
        gpu_memory_bytes("0GiB")
    with pytest.raises(ValueError):
        gpu_memory_bytes(-1)
