"""Request size limits: each check's boundary, the field it names, and the defaults from the config."""
from __future__ import annotations

import pytest

from serve_app.config import parse_config
from serve_app.openai_api import ApiError
from serve_app.policy.request_limits import RequestLimits


def limits(**http) -> RequestLimits:
    return RequestLimits.from_config(parse_config({"engine": {"max_model_len": 100}, "http": http}))


def error_of(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value


def test_defaults_are_the_context():
    default = limits()
    assert default.max_prompt_tokens == 99  # one token is left for the output
    assert default.max_output_tokens is None  # vLLM alone judges a budget against the context
    default.check_output_budget("max_tokens", 10_000)


def test_configured_limits_above_the_context_are_the_context():
    assert limits(max_prompt_tokens=500).max_prompt_tokens == limits().max_prompt_tokens
    assert limits(max_output_tokens=500).max_output_tokens == 100


def test_output_budget_boundary_names_the_field():
    capped = limits(max_output_tokens=20)
    capped.check_output_budget("max_tokens", 20)
    capped.check_output_budget(None, None)  # unnamed: capped on the replica, not refused
    error = error_of(lambda: capped.check_output_budget("max_completion_tokens", 21))
    assert (error.param, error.code) == ("max_completion_tokens", "max_tokens_too_large")


def test_message_and_stop_counts():
    strict = limits(max_messages=3, max_stop_sequences=2)
    strict.check_counts(num_messages=3, num_stop=2)
    assert error_of(lambda: strict.check_counts(num_messages=4)).param == "messages"
    assert error_of(lambda: strict.check_counts(num_stop=3)).param == "stop"


def test_limits_must_be_positive():
    from serve_app.config import ConfigError

    with pytest.raises(ConfigError, match="http.max_prompt_tokens"):
        limits(max_prompt_tokens=0)
