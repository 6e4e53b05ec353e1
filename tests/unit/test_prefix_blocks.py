"""Chained block keys: stable across processes, one per full block, equal exactly on equal prefixes."""
import subprocess
import sys

import pytest

from serve_app.policy.prefix_blocks import ROOT_KEY, block_keys, chained_block_key


def test_one_key_per_full_block_and_none_for_the_partial_last_block():
    assert len(block_keys(list(range(47)), 16)) == 2
    assert len(block_keys(list(range(48)), 16)) == 3
    assert block_keys(list(range(15)), 16) == ()


def test_keys_chain_so_a_block_key_covers_its_whole_prefix():
    keys = block_keys(list(range(32)), 16)
    assert keys[0] == chained_block_key(ROOT_KEY, list(range(16)))
    assert keys[1] == chained_block_key(keys[0], list(range(16, 32)))
    # The same second block after a different first block is a different key.
    other = block_keys([999] + list(range(1, 32)), 16)
    assert other[0] != keys[0] and other[1] != keys[1]


def test_prompts_sharing_a_prefix_share_exactly_its_keys():
    shared = list(range(100, 164))  # four blocks of 16
    first = block_keys(shared + [1] * 40, 16)
    second = block_keys(shared + [2] * 40, 16)
    assert first[:4] == second[:4]
    assert first[4] != second[4]


def test_continuing_a_chain_equals_keying_the_whole_prompt():
    tokens = list(range(64))
    whole = block_keys(tokens, 16)
    assert block_keys(tokens[32:], 16, parent_key=whole[1]) == whole[2:]


def test_keys_are_64_bit_and_the_same_in_another_process():
    keys = block_keys(list(range(40)), 8)
    assert all(0 <= key < 2**64 for key in keys)
    out = subprocess.run([sys.executable, "-c", "from serve_app.policy.prefix_blocks import block_keys;"
                          "print(list(block_keys(list(range(40)), 8)))"],
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == str(list(keys))


def test_block_size_must_be_positive():
    with pytest.raises(ValueError, match="block_size"):
        block_keys([1, 2, 3], 0)
