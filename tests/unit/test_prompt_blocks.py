"""The ingress keys a prompt's blocks from the tokens vLLM's app will give the engine."""
import json

import pytest

from serve_app.policy.prefix_blocks import block_keys
from serve_app.prompt_blocks import PromptBlockKeys
from serve_app.synthetic_model import token_word, write_tokenizer

VOCAB = 512


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(VOCAB, out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def _words(first: int, count: int) -> str:
    return " ".join(token_word(8 + (first + i) % 400, VOCAB) for i in range(count))


def test_a_completion_prompt_is_keyed_as_the_engine_sees_it(tokenizer_dir, tokenizer):
    blocks = PromptBlockKeys(tokenizer_dir, block_size=4)
    prompt = _words(0, 21)
    keys, length = blocks.keys("/v1/completions", json.dumps({"prompt": prompt}).encode(), 0)
    ids = tokenizer.encode(prompt)  # with BOS, as vLLM's completions
    assert length == len(ids)
    assert keys == block_keys(ids, 4) and len(keys) == len(ids) // 4


def test_prompts_sharing_a_beginning_share_their_full_blocks_only(tokenizer_dir):
    blocks = PromptBlockKeys(tokenizer_dir, block_size=4)
    first, _ = blocks.keys("/v1/completions", json.dumps({"prompt": _words(0, 20) + " " + _words(100, 5)}).encode(), 0)
    second, _ = blocks.keys("/v1/completions", json.dumps({"prompt": _words(0, 20) + " " + _words(200, 5)}).encode(), 0)
    # BOS + 20 shared words: the first five blocks (20 tokens) are the same, the sixth differs.
    assert first[:5] == second[:5] and first[5] != second[5]


def test_chat_prompts_use_the_chat_template(tokenizer_dir, tokenizer):
    blocks = PromptBlockKeys(tokenizer_dir, block_size=4)
    messages = [{"role": "system", "content": _words(0, 30)}, {"role": "user", "content": _words(50, 3)}]
    keys, length = blocks.keys("/v1/chat/completions", json.dumps({"messages": messages}).encode(), 0)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(rendered, add_special_tokens=False)
    assert (keys, length) == (block_keys(ids, 4), len(ids))
    # Another user turn after the same system prompt: the system prompt's blocks are shared.
    other = [messages[0], {"role": "user", "content": _words(90, 3)}]
    other_keys, _ = blocks.keys("/v1/chat/completions", json.dumps({"messages": other}).encode(), 0)
    shared = next(i for i, (a, b) in enumerate(zip(keys, other_keys)) if a != b)
    assert shared >= 30 // 4 - 1


def test_token_id_prompts_and_what_cannot_be_tokenized(tokenizer_dir):
    blocks = PromptBlockKeys(tokenizer_dir, block_size=4)
    assert blocks.keys("/v1/completions", json.dumps({"prompt": list(range(10))}).encode(), 0) == \
        (block_keys(list(range(10)), 4), 10)
    assert blocks.keys("/v1/completions", b"not json", 7) == ((), 7)
    assert blocks.keys("/v1/completions", json.dumps({"prompt": ["a", "b"]}).encode(), 7) == ((), 7)


def test_a_missing_tokenizer_routes_by_load_and_says_so_once(tmp_path, caplog):
    blocks = PromptBlockKeys(tmp_path / "nowhere", block_size=4)
    body = json.dumps({"prompt": "hello"}).encode()
    assert blocks.keys("/v1/completions", body, 3) == ((), 3)
    assert blocks.keys("/v1/completions", body, 3) == ((), 3)
    assert sum("not tokenized" in r.message for r in caplog.records) == 1
