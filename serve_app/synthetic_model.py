"""Random-weight Llama checkpoints in real AWQ GEMM format, with a word-level tokenizer.

Nothing here downloads weights: tests and benchmarks serve these checkpoints so that vLLM loads
and runs exactly the kernels a real AWQ model of the same shape would use.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

AWQ_BITS = 4
AWQ_GROUP_SIZE = 128
AWQ_PACK_FACTOR = 32 // AWQ_BITS
# AutoAWQ's GEMM layout interleaves the eight nibbles of an int32 in this order.
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SHARD_BYTES = 2 * 1024**3
# The vocabulary's last ids are JSON's characters and literals, so that structured outputs (JSON
# schemas, tool calls) have tokens to say them with; every other id is the word `t<id>`.
JSON_WORDS = ("{", "}", "[", "]", ":", ",", '"', "-", ".", "true", "false", "null", *"0123456789",
              *"abcdefghijklmnopqrstuvwxyz")
# Bumped when the files written change, so that a cached checkpoint of an older layout is rebuilt.
LAYOUT_VERSION = 2


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(256, 512, 2, 4, 2, 2048, 2048),
    "llama2-7b": ModelShape(4096, 11008, 32, 32, 32, 32000, 4096),
    "llama3-8b": ModelShape(4096, 14336, 32, 32, 8, 128256, 8192),
    # "tiny"'s layers with llama2-7b's vocabulary: the same tokenizer (it is written from the vocabulary
    # size alone), so it can serve as llama2-7b's speculative draft model.
    "llama2-7b-draft": ModelShape(256, 512, 2, 4, 2, 32000, 4096),
}


def shape_named(name: str) -> ModelShape:
    if name not in SHAPES:
        raise ValueError(f"unknown synthetic shape {name!r}; known: {sorted(SHAPES)}")
    return SHAPES[name]


def check_draft_shape(target: str, draft: str) -> None:
    """A draft model proposes token ids of the target's vocabulary: the two must share it."""
    target_vocab, draft_vocab = shape_named(target).vocab_size, shape_named(draft).vocab_size
    if target_vocab != draft_vocab:
        raise ValueError(f"engine.speculative.synthetic_shape: draft {draft!r} has {draft_vocab} tokens, the target "
                         f"{target!r} {target_vocab}; a draft needs the target's vocabulary")


def token_word(token_id: int, vocab_size: int | None = None) -> str:
    """The word for an ordinary token id, so decode-then-encode returns the same ids."""
    if vocab_size is not None and token_id >= vocab_size - len(JSON_WORDS):
        return JSON_WORDS[token_id - (vocab_size - len(JSON_WORDS))]
    return f"t{token_id}"


def pack_awq_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack int4 values [rows, cols] into int32 [rows, cols/8] in AWQ's GEMM nibble order."""
    rows, cols = values.shape
    grouped = values.to(torch.int32).reshape(rows, cols // AWQ_PACK_FACTOR, AWQ_PACK_FACTOR)
    packed = torch.zeros(rows, cols // AWQ_PACK_FACTOR, dtype=torch.int32)
    for slot, column in enumerate(AWQ_PACK_ORDER):
        packed |= grouped[:, :, column] << (slot * AWQ_BITS)
    return packed


def unpack_awq_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_awq_int4`."""
    rows, packed_cols = packed.shape
    values = torch.zeros(rows, packed_cols, AWQ_PACK_FACTOR, dtype=torch.int32)
    for slot, column in enumerate(AWQ_PACK_ORDER):
        values[:, :, column] = (packed >> (slot * AWQ_BITS)) & 0xF
    return values.reshape(rows, packed_cols * AWQ_PACK_FACTOR)


def random_awq_linear(in_features: int, out_features: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """qweight/qzeros/scales of a random linear layer whose dequantized weights have std ~0.02."""
    if in_features % AWQ_GROUP_SIZE or out_features % AWQ_PACK_FACTOR:
        raise ValueError(f"AWQ needs in % {AWQ_GROUP_SIZE} == 0 and out % 8 == 0, got {in_features}x{out_features}")
    groups = in_features // AWQ_GROUP_SIZE
    # Random int32 words are eight random nibbles each: same distribution as packing random int4s.
    qweight = torch.randint(-(2**31), 2**31 - 1, (in_features, out_features // AWQ_PACK_FACTOR),
                            dtype=torch.int32, generator=generator)
    qzeros = pack_awq_int4(torch.full((groups, out_features), 8, dtype=torch.int32))
    # (q - 8) is uniform on [-8, 7], std ~4.6, so this scale gives weights of std ~0.02.
    scales = torch.full((groups, out_features), 0.02 / 4.6, dtype=torch.float16)
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales}


def _layer_tensors(shape: ModelShape, layer: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{layer}"
    kv_out = shape.num_key_value_heads * shape.head_dim
    linears = {
        "self_attn.q_proj": (shape.hidden_size, shape.hidden_size),
        "self_attn.k_proj": (shape.hidden_size, kv_out),
        "self_attn.v_proj": (shape.hidden_size, kv_out),
        "self_attn.o_proj": (shape.hidden_size, shape.hidden_size),
        "mlp.gate_proj": (shape.hidden_size, shape.intermediate_size),
        "mlp.up_proj": (shape.hidden_size, shape.intermediate_size),
        "mlp.down_proj": (shape.intermediate_size, shape.hidden_size),
    }
    tensors: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in linears.items():
        for part, tensor in random_awq_linear(fan_in, fan_out, generator).items():
            tensors[f"{prefix}.{name}.{part}"] = tensor
    ones = torch.ones(shape.hidden_size, dtype=torch.float16)
    tensors[f"{prefix}.input_layernorm.weight"] = ones.clone()
    tensors[f"{prefix}.post_attention_layernorm.weight"] = ones.clone()
    return tensors


def hf_config(shape: ModelShape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab_size,
        "max_position_embeddings": shape.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "quantization_config": {
            "quant_method": "awq",
            "bits": AWQ_BITS,
            "group_size": AWQ_GROUP_SIZE,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": None,
        },
    }


def write_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """A word-level tokenizer: id i is the word `t<i>` (the last ids: JSON's words), plus bos/eos/role
    tokens and a chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({token_word(i, vocab_size): i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordPiece's decoder joins words with spaces, which WhitespaceSplit undoes exactly.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="</s>", model_max_length=1_000_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)


def _save_sharded(tensors: dict[str, torch.Tensor], out_dir: Path) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for index, shard in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in shard.items()}, str(out_dir / file_name), metadata={"format": "pt"})
        weight_map.update({name: file_name for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def make_model(shape_name: str, out_dir: str | Path, seed: int = 0, progress: bool = True) -> Path:
    """Write a synthetic AWQ checkpoint of a named shape into `out_dir` (created) and return it."""
    from tqdm import tqdm

    shape = shape_named(shape_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": (torch.randn(shape.vocab_size, shape.hidden_size, generator=generator) * 0.02).half(),
        "model.norm.weight": torch.ones(shape.hidden_size, dtype=torch.float16),
        "lm_head.weight": (torch.randn(shape.vocab_size, shape.hidden_size, generator=generator) * 0.02).half(),
    }
    for layer in tqdm(range(shape.num_hidden_layers), desc=f"make-model {shape_name}", disable=not progress):
        tensors.update(_layer_tensors(shape, layer, generator))
    _save_sharded(tensors, out)
    (out / "config.json").write_text(json.dumps(hf_config(shape), indent=2))
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    write_tokenizer(shape.vocab_size, out)
    (out / "synthetic_shape.json").write_text(json.dumps({"name": shape_name, "seed": seed, "layout": LAYOUT_VERSION,
                                                          **asdict(shape)}))
    return out


def ensure_model(shape_name: str, out_dir: str | Path) -> Path:
    """The checkpoint at `out_dir`, generated first if it is not complete there."""
    out = Path(out_dir)
    marker = out / "synthetic_shape.json"
    if marker.exists() and json.loads(marker.read_text()).get("layout") == LAYOUT_VERSION:
        return out
    return make_model(shape_name, out)
