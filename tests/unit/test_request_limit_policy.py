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
    assert default.max_output_tokens == 100
    assert default.max_tokens(None, 30) == 70  # no max_tokens: the rest of the context


def test_configured_limits_above_the_context_are_the_context():
    assert limits(max_prompt_tokens=500, max_output_tokens=500) == limits()


def test_prompt_limit_boundary_and_param():
    strict = limits(max_prompt_tokens=40)
    assert strict.max_tokens(4, 40) == 4
    error = error_of(lambda: strict.max_tokens(4, 41, prompt_param="messages"))
    assert (error.param, error.code) == ("messages", "prompt_too_long")


def test_prompt_filling_the_context_is_context_length_exceeded():
    error = error_of(lambda: limits().max_tokens(None, 100))
    assert (error.param, error.code) == ("prompt", "context_length_exceeded")


def test_output_limit_caps_requested_and_default():
    capped = limits(max_output_tokens=20)
    assert capped.max_tokens(20, 10) == 20
    assert capped.max_tokens(None, 10) == 20
    assert capped.max_tokens(None, 90) == 10  # the context is tighter than the cap
    error = error_of(lambda: capped.max_tokens(21, 10, max_tokens_param="max_completion_tokens"))
    assert (error.param, error.code) == ("max_completion_tokens", "max_tokens_too_large")


def test_requested_past_the_context():
    error = error_of(lambda: limits().max_tokens(71, 30))
    assert (error.param, error.code) == ("max_tokens", "context_length_exceeded")
    assert limits().max_tokens(70, 30) == 70


@pytest.mark.parametrize("requested", [0, -3])
def test_non_positive_max_tokens(requested):
    assert error_of(lambda: limits().max_tokens(requested, 5)).param == "max_tokens"


def test_message_and_stop_counts():
    strict = limits(max_messages=3, max_stop_sequences=2)
    strict.check_counts(num_messages=3, num_stop=2)
    assert error_of(lambda: strict.check_counts(num_messages=4)).param == "messages"
    assert error_of(lambda: strict.check_counts(num_stop=3)).param == "stop"


def test_limits_must_be_positive():
    from serve_app.config import ConfigError

    with pytest.raises(ConfigError, match="http.max_prompt_tokens"):
        limits(max_prompt_tokens=0)
