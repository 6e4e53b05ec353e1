"""Synthetic AWQ checkpoints (serve_app/synthetic_model.py): packing, layout, tokenizer."""

import json

import pytest
import torch
from safetensors import safe_open

from serve_app import synthetic_model as sm
from serve_app.synthetic_model import (JSON_WORDS, 
    AWQ_GROUP_SIZE, SHAPES, ensure_model, make_model, pack_awq_int4, random_awq_linear,
    shape_named, unpack_awq_int4,
)

TINY = SHAPES["tiny"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """One tiny checkpoint for the whole module (generation takes seconds)."""
    return make_model("tiny", tmp_path_factory.mktemp("tiny"), progress=False)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return AutoTokenizer.from_pretrained(str(tiny_dir))


def read_tensors(model_dir) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


def expected_tensors(shape) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of every tensor a Llama AWQ GEMM checkpoint holds."""
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.head_dim
    vocab_h = (shape.vocab_size, h)
    out = {"model.embed_tokens.weight": (vocab_h, torch.float16), "lm_head.weight": (vocab_h, torch.float16),
           "model.norm.weight": ((h,), torch.float16)}
    linears = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
               "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, shape.intermediate_size),
               "mlp.up_proj": (h, shape.intermediate_size), "mlp.down_proj": (shape.intermediate_size, h)}
    for layer in range(shape.num_hidden_layers):
        p = f"model.layers.{layer}"
        for name, (fan_in, fan_out) in linears.items():
            out[f"{p}.{name}.qweight"] = ((fan_in, fan_out // 8), torch.int32)
            out[f"{p}.{name}.qzeros"] = ((fan_in // 128, fan_out // 8), torch.int32)
            out[f"{p}.{name}.scales"] = ((fan_in // 128, fan_out), torch.float16)
        out[f"{p}.input_layernorm.weight"] = ((h,), torch.float16)
        out[f"{p}.post_attention_layernorm.weight"] = ((h,), torch.float16)
    return out


def test_pack_unpack_round_trip():
    g = torch.Generator().manual_seed(1234)
    values = torch.randint(0, 16, (64, 96), dtype=torch.int32, generator=g)
    packed = pack_awq_int4(values)
    assert packed.dtype == torch.int32 and packed.shape == (64, 12)
    assert torch.equal(unpack_awq_int4(packed), values)


def test_pack_order_by_hand():
    # Nibble slot k (bits 4k..4k+3) holds column AWQ_PACK_ORDER[k] = (0,2,4,6,1,3,5,7)[k]; in row
    # [0..7] column c holds c, so slots 7..0 read 7,5,3,1,6,4,2,0 -> 0x75316420.
    row = torch.arange(8, dtype=torch.int32).unsqueeze(0)
    assert pack_awq_int4(row).tolist() == [[0x75316420]]
    # All nibbles 15 sets every bit, including int32's sign bit: -1.
    assert pack_awq_int4(torch.full((1, 8), 15, dtype=torch.int32)).tolist() == [[-1]]
    assert unpack_awq_int4(torch.tensor([[0x75316420, -1]], dtype=torch.int32)).tolist() == [
        list(range(8)) + [15] * 8]


def test_random_awq_linear_layout_and_statistics():
    in_f, out_f = 512, 384
    layer = random_awq_linear(in_f, out_f, torch.Generator().manual_seed(0))
    qweight, qzeros, scales = layer["qweight"], layer["qzeros"], layer["scales"]
    assert (qweight.dtype, tuple(qweight.shape)) == (torch.int32, (in_f, out_f // 8))
    assert (qzeros.dtype, tuple(qzeros.shape)) == (torch.int32, (in_f // 128, out_f // 8))
    assert (scales.dtype, tuple(scales.shape)) == (torch.float16, (in_f // 128, out_f))
    zeros = unpack_awq_int4(qzeros)
    assert torch.all(zeros == 8)
    q = unpack_awq_int4(qweight).float()
    z = zeros.float().repeat_interleave(AWQ_GROUP_SIZE, dim=0)
    s = scales.float().repeat_interleave(AWQ_GROUP_SIZE, dim=0)
    weights = (q - z) * s
    assert weights.std().item() == pytest.approx(0.02, rel=0.2)
    assert abs(weights.mean().item()) < 0.005


@pytest.mark.parametrize(("in_f", "out_f"), [(100, 64), (192, 64), (128, 12)])
def test_random_awq_linear_rejects_bad_sizes(in_f, out_f):
    with pytest.raises(ValueError, match="AWQ needs"):
        random_awq_linear(in_f, out_f, torch.Generator().manual_seed(0))


def test_config_json(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    quant = config["quantization_config"]
    assert (quant["quant_method"], quant["bits"], quant["group_size"]) == ("awq", 4, 128)
    assert quant["zero_point"] is True and quant["version"] == "gemm"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (TINY.hidden_size, TINY.num_hidden_layers)
    assert (config["num_key_value_heads"], config["vocab_size"]) == (TINY.num_key_value_heads, TINY.vocab_size)
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)


def test_safetensors_names_shapes_dtypes(tiny_dir):
    tensors = read_tensors(tiny_dir)
    expected = expected_tensors(TINY)
    assert set(tensors) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert (tuple(tensors[name].shape), tensors[name].dtype) == (shape, dtype), name
    assert tensors["model.layers.0.self_attn.k_proj.scales"].shape[1] == 2 * 64  # kv heads * head_dim


def test_index_maps_every_tensor(tiny_dir):
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    tensors = read_tensors(tiny_dir)
    assert set(weight_map) == set(tensors)
    for name, file_name in weight_map.items():
        with safe_open(str(tiny_dir / file_name), framework="pt") as f:
            assert name in f.keys()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    assert index["metadata"]["total_size"] == total


def test_tokenizer_round_trips_ids(tokenizer):
    json_start = TINY.vocab_size - len(JSON_WORDS)
    ids = [6, 7, 100, 1234, json_start - 1, json_start, json_start + 6, TINY.vocab_size - 1]
    text = tokenizer.decode(ids)
    assert text == f't6 t7 t100 t1234 t{json_start - 1} {{ " z'
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    assert len(tokenizer) == TINY.vocab_size


def test_tokenizer_special_ids(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<|user|>", "<|assistant|>"]) == [0, 4, 5]


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": "t10 t11"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<s>") and prompt.endswith("<|assistant|>")
    assert tokenizer.encode(prompt, add_special_tokens=False) == [1, 4, 10, 11, 5]


def test_shape_named():
    assert shape_named("tiny") is TINY
    with pytest.raises(ValueError, match="nope") as info:
        shape_named("nope")
    assert all(name in str(info.value) for name in ("tiny", "llama2-7b", "llama3-8b"))


@pytest.mark.parametrize(
    ("name", "intermediate", "kv_heads", "vocab"),
    [("llama2-7b", 11008, 32, 32000), ("llama3-8b", 14336, 8, 128256)],
)
def test_published_shapes(name, intermediate, kv_heads, vocab):
    s = SHAPES[name]
    assert (s.hidden_size, s.intermediate_size, s.num_hidden_layers) == (4096, intermediate, 32)
    assert (s.num_attention_heads, s.num_key_value_heads, s.vocab_size) == (32, kv_heads, vocab)
    assert s.head_dim == 128


def test_ensure_model_keeps_existing_checkpoint(tiny_dir):
    files = [tiny_dir / "config.json", *tiny_dir.glob("*.safetensors")]
    before = {f: f.stat().st_mtime_ns for f in files}
    assert ensure_model("tiny", tiny_dir) == tiny_dir
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_ensure_model_generates_when_absent(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sm, "make_model", lambda name, out: calls.append((name, out)) or out)
    assert ensure_model("tiny", tmp_path / "new") == tmp_path / "new"
    assert calls == [("tiny", tmp_path / "new")]
