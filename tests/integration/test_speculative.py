"""Speculative decoding (issue 19): an app whose engine drafts by n-gram lookup answers greedy requests
with exactly the text the shared app (no speculation) gives, and its engine stats show the drafts.
The same side app sizes its batch by KV occupancy (`engine.batch_size_policy: memory_occupancy`).

One engine start (~60 s on 2 cores) for the side app; the requests themselves take seconds.
"""
from __future__ import annotations

import os

import httpx
import pytest
from router_helpers import EXACT, fresh_side_app

from serve_app.config import parse_config

SIDE_APP = "speculative"
SPECULATIVE = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
MAX_TOKENS = 24
# Each ends with a 4-gram seen earlier in it, so n-gram lookup proposes drafts from the first decode step;
# the last has no repetition (drafts only if the output repeats itself).
PROMPTS = (
    "t10 t11 t12 t13 t14 t10 t11 t12 t13 t14 t10 t11 t12 t13",
    "t200 t300 t400 t500 t200 t300 t400 t500 t200 t300 t400 t500",
    "t7 t7 t7 t7 t7 t7 t7 t7 t7 t7",
    "t1000 t1200 t31 t64 t99 t1500 t42 t8",
)


@pytest.fixture(scope="module")
def speculative_url(app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("needs an app of its own")
    data = app_config.model_dump(mode="json")
    data["engine"] = {**data["engine"], "speculative": SPECULATIVE, "batch_size_policy": "memory_occupancy"}
    yield from fresh_side_app(parse_config(data), SIDE_APP)


def _greedy_text(url: str, model: str, prompt: str) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, **EXACT}
    answer = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert answer.json()["usage"]["completion_tokens"] == MAX_TOKENS
    return choice["text"]


def _engine_stats() -> dict:
    from ray import serve

    handle = serve.get_deployment_handle("LLMReplica", app_name=SIDE_APP)
    return handle.engine_stats.remote().result(timeout_s=30)


def test_greedy_outputs_are_the_same_with_speculation(speculative_url, base_url, model_name):
    drafted_before = _engine_stats()["spec_drafted_tokens"]
    # One request at a time on each app, so neither engine batches them differently.
    plain = [_greedy_text(base_url, model_name, prompt) for prompt in PROMPTS]
    speculated = [_greedy_text(speculative_url, model_name, prompt) for prompt in PROMPTS]
    assert speculated == plain
    stats = _engine_stats()
    # The n-gram proposer ran on these requests and the target verified its drafts.
    assert stats["spec_drafted_tokens"] > drafted_before
    assert 0 <= stats["spec_accepted_tokens"] <= stats["spec_drafted_tokens"]
    assert stats["spec_acceptance_rate"] == stats["spec_accepted_tokens"] / stats["spec_drafted_tokens"]
    # Each step verifies 1 + 3 tokens per sequence: the budget made room for them.
    assert stats["max_num_batched_tokens"] >= stats["max_num_seqs"] * (1 + SPECULATIVE["num_speculative_tokens"])


def test_the_engine_runs_the_adaptive_plan(speculative_url, app_config):
    from serve_app.memory.occupancy import planned_max_num_seqs
    from serve_app.memory.presets import get_preset
    from serve_app.policy.batch_controller import CPU_MAX_NUM_SEQS, preset_within_context

    (entry,) = httpx.get(f"{speculative_url}/v1/controller/status", timeout=30).json().values()
    assert entry["kv_sizing"] == "occupancy"
    assert entry["actual_kv_tokens"] == entry["predicted_kv_tokens"]
    preset = preset_within_context(get_preset(app_config.engine.preset), app_config.engine.max_model_len)
    # n-gram with k drafts holds k more KV slots per sequence (serve_app/memory/speculation.py)
    occupancy = planned_max_num_seqs(entry["predicted_kv_tokens"], entry["block_size"], preset, "occupancy",
                                     extra_tokens_per_seq=SPECULATIVE["num_speculative_tokens"])
    worst_case = planned_max_num_seqs(entry["predicted_kv_tokens"], entry["block_size"], preset, "worst_case",
                                      extra_tokens_per_seq=SPECULATIVE["num_speculative_tokens"])
    assert occupancy >= worst_case
    # engine.batch_size_policy adaptive: the engine at vLLM's own CPU default, the occupancy figure (with the
    # drafts' slots) starting the router's window cap.
    assert entry["plan"]["max_num_seqs"] == CPU_MAX_NUM_SEQS
    assert entry["first_window_cap"] == min(occupancy, CPU_MAX_NUM_SEQS)
    assert _engine_stats()["max_num_seqs"] == entry["plan"]["max_num_seqs"]
