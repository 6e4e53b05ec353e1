"""`engine.speculative`: validation that names the field, and the `speculative_config` dict vLLM gets."""
from __future__ import annotations

import dataclasses

import pytest

from serve_app.config import ConfigError, parse_config
from serve_app.synthetic_model import SHAPES, check_draft_shape


def speculative(**fields):
    return parse_config({"engine": {"speculative": fields}}).engine.speculative


def test_speculation_is_off_by_default():
    assert parse_config({}).engine.speculative is None


def test_ngram_settings_become_vllms_speculative_config():
    settings = speculative(method="ngram", num_speculative_tokens=3, prompt_lookup_max=4)
    assert settings.vllm_config("/cache") == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
    both = speculative(method="ngram", num_speculative_tokens=2, prompt_lookup_min=2, prompt_lookup_max=4)
    assert both.vllm_config("/cache") == {"method": "ngram", "num_speculative_tokens": 2,
                                          "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    assert not both.uses_draft_model and both.draft_path("/cache") is None


def test_a_synthetic_draft_lives_beside_the_synthetic_model():
    settings = speculative(method="draft_model", num_speculative_tokens=4, synthetic_shape="llama2-7b-draft")
    assert settings.vllm_config("/cache") == {"method": "draft_model", "num_speculative_tokens": 4,
                                              "model": "/cache/llama2-7b-draft"}
    by_path = speculative(method="draft_model", num_speculative_tokens=4, model="/models/draft")
    assert by_path.vllm_config("/cache")["model"] == "/models/draft"


def test_the_dict_uses_only_keys_vllms_speculative_config_has():
    from vllm.config.speculative import SpeculativeConfig

    known = {f.name for f in dataclasses.fields(SpeculativeConfig)}
    for settings in (speculative(method="ngram", num_speculative_tokens=3, prompt_lookup_min=1, prompt_lookup_max=4),
                     speculative(method="draft_model", num_speculative_tokens=3, model="/m")):
        assert set(settings.vllm_config("/cache")) <= known


def test_engine_args_carry_the_speculative_config(tmp_path):
    from serve_app.engine_args import engine_args_from_config

    config = parse_config({"model": {"cache_dir": str(tmp_path)},
                           "engine": {"speculative": {"method": "ngram", "num_speculative_tokens": 3,
                                                      "prompt_lookup_max": 4}}})
    args = engine_args_from_config(config)
    assert args.speculative_config == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
    assert engine_args_from_config(parse_config({})).speculative_config is None


@pytest.mark.parametrize(("fields", "named"), [
    ({"method": "ngram", "num_speculative_tokens": 0}, "engine.speculative.num_speculative_tokens"),
    ({"method": "eagle", "num_speculative_tokens": 3}, "engine.speculative.method"),
    ({"num_speculative_tokens": 3}, "engine.speculative.method"),
    ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 5, "prompt_lookup_max": 2},
     "prompt_lookup_min (5) must not exceed prompt_lookup_max (2)"),
    ({"method": "ngram", "num_speculative_tokens": 3, "model": "/m"}, "model: only for method draft_model"),
    ({"method": "draft_model", "num_speculative_tokens": 3}, "model / synthetic_shape"),
    ({"method": "draft_model", "num_speculative_tokens": 3, "model": "/m", "synthetic_shape": "tiny"},
     "model / synthetic_shape"),
    ({"method": "draft_model", "num_speculative_tokens": 3, "model": "/m", "prompt_lookup_max": 3},
     "prompt_lookup_max: only for method ngram"),
    ({"method": "ngram", "num_speculative_tokens": 3, "lookahead": 2}, "engine.speculative.lookahead"),
])
def test_bad_settings_name_the_field(fields, named):
    with pytest.raises(ConfigError, match="engine.speculative") as raised:
        parse_config({"engine": {"speculative": fields}})
    assert named in str(raised.value)


def test_a_draft_needs_the_targets_vocabulary():
    assert SHAPES["llama2-7b-draft"].vocab_size == SHAPES["llama2-7b"].vocab_size
    assert SHAPES["llama2-7b-draft"].num_hidden_layers < SHAPES["llama2-7b"].num_hidden_layers
    check_draft_shape("llama2-7b", "llama2-7b-draft")
    check_draft_shape("tiny", "tiny")
    with pytest.raises(ValueError, match="engine.speculative.synthetic_shape"):
        check_draft_shape("llama2-7b", "tiny")
