"""The shared-prefix multi-tenant workload: planning, spec strings, the ideal prefix-cache hit rate, and
per-tenant statistics."""
from __future__ import annotations

from collections import Counter

import pytest

from autoscaling.loadtest.arrivals import poisson
from autoscaling.loadtest.cli import build_parser, spec_from_args
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.lengths import Fixed
from autoscaling.loadtest.metrics import RequestRecord, Slo, all_stats
from autoscaling.loadtest.shared_prefix import (SharedPrefixSpec, ideal_prefix_hit_rate, parse_tenant_keys,
                                                parse_tenant_rates, plan_shared_prefix, planned_ideal_hit_rate)
from autoscaling.loadtest.workload import SpecError


def spec(**fields) -> SharedPrefixSpec:
    defaults = dict(arrival=poisson(5), tenants=3, prefix_len=32, suffix_len=8, output_len=Fixed(4),
                    conversations=2, num_requests=60, seed=7)
    return SharedPrefixSpec(**{**defaults, **fields})


def test_plan_is_deterministic_under_a_seed_and_changes_with_it():
    assert plan_shared_prefix(spec()) == plan_shared_prefix(spec())
    assert [p.prompt for p in plan_shared_prefix(spec())] != [p.prompt for p in plan_shared_prefix(spec(seed=8))]


def test_prompt_is_the_tenants_prefix_then_a_conversation_suffix_in_one_token_words():
    planned = plan_shared_prefix(spec())
    by_tenant: dict[str, list] = {}
    for request in planned:
        words = request.prompt.split()
        assert len(words) == request.prompt_len == 40 and request.max_tokens == 4
        assert words == [f"t{t}" for t in request.token_ids]
        by_tenant.setdefault(request.tenant, []).append(request.token_ids)
    assert sorted(by_tenant) == ["tenant-0", "tenant-1", "tenant-2"]
    prefixes = {tenant: {ids[:32] for ids in prompts} for tenant, prompts in by_tenant.items()}
    assert all(len(p) == 1 for p in prefixes.values())  # one prefix per tenant
    assert len({next(iter(p)) for p in prefixes.values()}) == 3  # and each tenant its own
    assert all(len({ids[32:] for ids in prompts}) <= 2 for prompts in by_tenant.values())  # two conversations


def test_without_conversations_every_request_has_its_own_suffix():
    planned = plan_shared_prefix(spec(conversations=None))
    assert len({p.token_ids[32:] for p in planned}) == len(planned)


def test_a_rate_sweep_sends_the_same_requests_at_each_rate():
    slow, fast = plan_shared_prefix(spec(arrival=poisson(1))), plan_shared_prefix(spec(arrival=poisson(50)))
    assert [(p.tenant, p.prompt) for p in slow] == [(p.tenant, p.prompt) for p in fast]
    assert slow[-1].send_offset_s > fast[-1].send_offset_s


def test_tenant_rates_split_the_arrivals():
    planned = plan_shared_prefix(spec(tenants=2, tenant_weights=(10, 1), num_requests=2200, conversations=None))
    counts = Counter(p.tenant for p in planned)
    assert counts["tenant-0"] / counts["tenant-1"] == pytest.approx(10, rel=0.25)
    alone = plan_shared_prefix(spec(tenants=2, tenant_weights=(0, 1)))
    assert {p.tenant for p in alone} == {"tenant-1"}


def test_each_tenant_sends_its_own_key():
    planned = plan_shared_prefix(spec(api_keys=("ka", "kb", "kc")))
    keys = {p.tenant: p.api_key for p in planned}
    assert keys == {"tenant-0": "ka", "tenant-1": "kb", "tenant-2": "kc"}
    options = ClientOptions("http://x", "m", api_keys={"*": "class-key"})
    assert options.headers("default", planned[0].api_key)["authorization"] == f"Bearer {planned[0].api_key}"
    assert options.headers("default")["authorization"] == "Bearer class-key"


@pytest.mark.parametrize("fields, message", [
    ({"tenants": 0}, "tenants"), ({"prefix_len": 0, "suffix_len": 0}, "not both 0"),
    ({"conversations": 0}, "conversations"), ({"tenant_weights": (1, 2)}, "2 given for 3"),
    ({"tenant_weights": (0, 0, 0)}, "not all 0"), ({"api_keys": ("a",)}, "1 given for 3"),
    ({"num_requests": None}, "duration"),
])
def test_bad_specs_name_the_setting(fields, message):
    with pytest.raises(SpecError, match=message):
        spec(**fields)


# ---- ideal hit rate ----------------------------------------------------------------------------
def test_ideal_hit_rate_counts_whole_leading_blocks_seen_before():
    a, b, c = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    # [a b] then [a c]: block a hits (4 of 8); then [a b c] hits a and b (8 of 12).
    assert ideal_prefix_hit_rate([a + b, a + c, a + b + c], block_size=4) == pytest.approx(12 / 28)
    # A block after a miss never hits (the chain of block hashes differs): [c b] after [a b].
    assert ideal_prefix_hit_rate([a + b, c + b], block_size=4) == 0
    # A full repeat still computes its last token: of 8 tokens, only the first block hits.
    assert ideal_prefix_hit_rate([a + b, a + b], block_size=4) == pytest.approx(4 / 16)
    # Partial blocks never hit; token-level with block_size 1.
    assert ideal_prefix_hit_rate([a + [1], a + [2]], block_size=4) == pytest.approx(4 / 10)
    assert ideal_prefix_hit_rate([[1, 2, 3], [1, 2, 9]], block_size=1) == pytest.approx(2 / 6)
    assert ideal_prefix_hit_rate([]) is None


def test_ideal_hit_rate_of_a_plan_is_every_prefix_but_each_tenants_first():
    planned = plan_shared_prefix(spec(conversations=None, prefix_len=64, suffix_len=16, num_requests=50))
    first_of_tenant = len({p.tenant for p in planned})
    expected = (len(planned) - first_of_tenant) * 64 / (len(planned) * 80)
    assert planned_ideal_hit_rate(planned) == pytest.approx(expected)


def test_no_shared_prefix_workload_has_no_ideal_hits():
    planned = plan_shared_prefix(spec(prefix_len=0, suffix_len=64, conversations=None))
    assert planned_ideal_hit_rate(planned) == 0


# ---- spec strings and CLI ------------------------------------------------------------------------
def test_parse_tenant_rates():
    assert parse_tenant_rates("equal", 3) is None
    assert parse_tenant_rates("10,1", 2) == (10.0, 1.0)
    assert parse_tenant_rates("zipf:1", 3) == pytest.approx((1, 1 / 2, 1 / 3))
    for bad in ("1,2", "a,b,c", "zipf:x", "zipf:-1", "0,0,0"):
        with pytest.raises(SpecError):
            parse_tenant_rates(bad, 3)


def test_parse_tenant_keys_from_lists_and_files(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("k2\n\nk3\n")
    assert parse_tenant_keys(["k1", f"@{keys}"], 3) == ("k1", "k2", "k3")
    assert parse_tenant_keys(["a,b"], 2) == ("a", "b")
    assert parse_tenant_keys([], 2) is None
    with pytest.raises(SpecError, match="3 given for 2"):
        parse_tenant_keys(["a,b,c"], 2)
    with pytest.raises(SpecError, match="tenant keys"):
        parse_tenant_keys([f"@{tmp_path / 'missing'}"], 2)


def test_cli_builds_the_shared_prefix_spec():
    args = build_parser().parse_args(
        ["run", "--base-url", "http://x", "--workload", "shared-prefix", "--tenants", "2", "--prefix-len", "100",
         "--suffix-len", "10", "--conversations", "none", "--tenant-rates", "10,1", "--tenant-key", "a,b",
         "--output-len", "fixed:20", "--num-requests", "30", "--mix", "batch"])
    built = spec_from_args(args)
    assert isinstance(built, SharedPrefixSpec)
    assert (built.tenants, built.prefix_len, built.suffix_len, built.conversations) == (2, 100, 10, None)
    assert built.tenant_weights == (10.0, 1.0) and built.api_keys == ("a", "b") and built.class_name == "batch"
    assert built.to_dict()["kind"] == "shared_prefix"


def test_per_tenant_stats_judge_each_tenant_by_its_class_slo():
    def record(index: int, tenant: str, ttft: float) -> RequestRecord:
        return RequestRecord(index, "default", send_s=0.0, end_s=1.0, outcome="completed", first_token_s=ttft,
                             token_times_s=[ttft, 1.0], output_tokens=2, tenant=tenant)

    records = [record(0, "a", 0.1), record(1, "a", 0.9), record(2, "b", 0.2)]
    stats = all_stats(records, 2.0, {"default": Slo(ttft_s=0.5)})
    assert stats["tenants"]["a"]["goodput_rps"] == pytest.approx(0.5)
    assert stats["tenants"]["b"]["goodput_rps"] == pytest.approx(0.5)
    assert stats["tenants"]["a"]["ttft_s"]["p50"] == pytest.approx(0.5)
    assert "tenants" not in all_stats([record(0, None, 0.1)], 1.0, {})
