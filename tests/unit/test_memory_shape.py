"""Parsing HF config.json into ModelShape."""

import json
from pathlib import Path

import pytest

from serve_app.memory.shape import AwqConfig, ModelShape

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model_configs"


def cfg(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def test_llama2_7b_fields():
    s = ModelShape.from_hf_config(cfg("llama-2-7b-hf"))
    assert (s.num_layers, s.hidden_size, s.intermediate_size) == (32, 4096, 11008)
    assert (s.num_attention_heads, s.num_key_value_heads, s.head_dim) == (32, 32, 128)
    assert (s.vocab_size, s.max_position_embeddings, s.torch_dtype) == (32000, 4096, "float16")
    assert s.tie_word_embeddings is False and s.quantization is None


def test_qwen2_head_dim_derived_from_hidden_over_heads():
    s = ModelShape.from_hf_config(cfg("qwen2-7b"))
    assert s.head_dim == 3584 // 28 == 128
    assert s.num_key_value_heads == 4


def test_explicit_head_dim_wins_and_kv_heads_default_to_heads():
    raw = cfg("llama-2-7b-hf")
    del raw["num_key_value_heads"]
    raw["head_dim"] = 256
    s = ModelShape.from_hf_config(raw)
    assert s.head_dim == 256 and s.num_key_value_heads == 32


def test_awq_quantization_config_parsed():
    s = ModelShape.from_hf_config(cfg("llama-2-7b-awq"))
    assert s.quantization == AwqConfig(bits=4, group_size=128, zero_point=True)


def test_autoawq_legacy_keys_and_dtype_key():
    raw = cfg("llama-2-7b-hf")
    del raw["torch_dtype"]
    raw["dtype"] = "bfloat16"
    raw["quantization_config"] = {"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "zero_point": False}
    s = ModelShape.from_hf_config(raw)
    assert s.quantization == AwqConfig(bits=4, group_size=64, zero_point=False)
    assert s.torch_dtype == "bfloat16"


def test_non_awq_quantization_rejected():
    raw = cfg("llama-2-7b-hf")
    raw["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    with pytest.raises(ValueError, match="gptq"):
        ModelShape.from_hf_config(raw)
