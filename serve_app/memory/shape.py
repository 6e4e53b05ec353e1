"""Model geometry parsed from a Hugging Face ``config.json`` dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class AwqConfig:
    """AWQ weight-only quantization parameters (``quantization_config``)."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True

    @classmethod
    def from_hf(cls, qcfg: Mapping[str, Any]) -> AwqConfig:
        """Read AWQ keys; AutoAWQ's older ``w_bit``/``q_group_size`` names too."""
        bits = int(qcfg.get("bits", qcfg.get("w_bit", 4)))
        group_size = int(qcfg.get("group_size", qcfg.get("q_group_size", 128)))
        if bits not in (4, 8) or group_size <= 0:
            raise ValueError(f"unsupported AWQ bits={bits} group_size={group_size}")
        return cls(bits=bits, group_size=group_size, zero_point=bool(qcfg.get("zero_point", True)))


@dataclass(frozen=True)
class ModelShape:
    """Decoder-only (Llama-family) dimensions that drive memory sizing."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    torch_dtype: str
    quantization: AwqConfig | None = None

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ModelShape:
        """Build from a config dict; only AWQ or unquantized checkpoints are accepted."""
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        head_dim = cfg.get("head_dim")
        qcfg = cfg.get("quantization_config")
        quant: AwqConfig | None = None
        if qcfg is not None:
            method = str(qcfg.get("quant_method", "")).lower()
            if method != "awq":
                raise ValueError(f"unsupported quant_method {method!r}; only 'awq' is modelled")
            quant = AwqConfig.from_hf(qcfg)
        return cls(
            num_layers=int(cfg["num_hidden_layers"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(head_dim) if head_dim else hidden // heads,
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 0)),
            # transformers >= 4.56 writes "dtype" instead of "torch_dtype".
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float16"),
            quantization=quant,
        )
