"""One real app per test session: Ray Serve + the vLLM CPU engine serving the tiny synthetic model."""
from __future__ import annotations

import socket

import pytest

from serve_app.config import parse_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_config(tmp_path_factory):
    return parse_config({
        "model": {"synthetic_shape": "tiny", "cache_dir": str(tmp_path_factory.mktemp("models"))},
        "engine": {"max_model_len": 512},
        "http": {"port": _free_port()},
    })


@pytest.fixture(scope="session")
def base_url(app_config):
    from serve_app.local import start_local, stop_local

    url = start_local(app_config)
    yield url
    stop_local()


@pytest.fixture(scope="session")
def model_name(app_config) -> str:
    return app_config.model.served_name


@pytest.fixture(scope="session")
def tokenizer(app_config, base_url):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(app_config.model.resolved_path()))


@pytest.fixture()
def client(base_url):
    from openai import OpenAI

    with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c
