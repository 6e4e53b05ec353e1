"""API keys: digests only, ceilings, anonymous access, and the config that builds the registry."""
from __future__ import annotations

import json

import pytest

from serve_app.config import ConfigError, parse_config
from serve_app.policy.api_keys import ApiKeyRegistry, AuthenticationFailed, Caller, bearer_token, hash_api_key

GOLD = Caller("gold", "interactive")
BRONZE = Caller("bronze", "batch", rate_limit_rps=1, burst=2)


def registry(anonymous: Caller | None = None) -> ApiKeyRegistry:
    return ApiKeyRegistry([(hash_api_key("gold-key"), GOLD), (hash_api_key("bronze-key"), BRONZE)], anonymous)


def test_a_known_key_is_its_caller():
    assert registry().authenticate("bronze-key") is BRONZE


def test_an_unknown_key_is_refused_even_when_anonymous_access_is_on():
    with pytest.raises(AuthenticationFailed, match="not valid"):
        registry(Caller("anonymous", "batch")).authenticate("guess")


def test_no_key_is_anonymous_only_when_allowed():
    anonymous = Caller("anonymous", "batch")
    assert registry(anonymous).authenticate(None) is anonymous
    with pytest.raises(AuthenticationFailed, match="required"):
        registry().authenticate(None)


def test_without_configured_keys_any_presented_key_is_anonymous():
    anonymous = Caller("anonymous", "interactive")
    assert ApiKeyRegistry([], anonymous).authenticate("whatever-the-sdk-sends") is anonymous


def test_digests_must_be_sha256_hex():
    with pytest.raises(ValueError, match="64 hex"):
        ApiKeyRegistry([("not-a-digest", GOLD)], None)


@pytest.mark.parametrize("header, expected", [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                              ("Bearer", None), (None, None)])
def test_bearer_token(header, expected):
    assert bearer_token(header) == expected


def test_config_builds_callers_with_ceilings_from_inline_file_and_env(tmp_path, monkeypatch):
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(json.dumps([{"name": "from-file", "sha256": hash_api_key("f"), "ceiling": "standard"}]))
    monkeypatch.setenv("TEST_LLMSERVE_KEYS", json.dumps([{"name": "from-env", "sha256": hash_api_key("e")}]))
    config = parse_config({"auth": {
        "keys": [{"name": "inline", "sha256": hash_api_key("i"), "ceiling": "batch", "rate_limit_rps": 3}],
        "keys_file": str(key_file), "keys_env": "TEST_LLMSERVE_KEYS", "allow_anonymous": False}})
    keys = config.api_key_registry()
    assert keys.authenticate("i") == Caller("inline", "batch", 3.0, 10)
    assert keys.authenticate("f").ceiling == "standard"
    assert keys.authenticate("e").ceiling == "interactive"  # no ceiling: the highest class
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(None)


def test_config_rejects_a_ceiling_that_is_not_a_class():
    with pytest.raises(ConfigError, match=r"auth.keys.0.ceiling.*'platinum'"):
        parse_config({"auth": {"keys": [{"name": "k", "sha256": hash_api_key("k"), "ceiling": "platinum"}]}})


def test_config_names_the_unreadable_key_file(tmp_path):
    config = parse_config({"auth": {"keys_file": str(tmp_path / "missing.yaml")}})
    with pytest.raises(ConfigError, match="auth.keys_file"):
        config.api_key_registry()


def test_hash_key_command_prints_the_digest_the_registry_accepts(capsys, monkeypatch):
    import io

    from serve_app.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["hash-key"]) == 0
    digest = capsys.readouterr().out.strip()
    assert ApiKeyRegistry([(digest, GOLD)], None).authenticate("s3cret") is GOLD
