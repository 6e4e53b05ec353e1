"""One real app per test session: Ray Serve + the vLLM CPU engine serving the tiny synthetic model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from ports import free_port, free_port_range

from serve_app.config import EngineSettings, parse_config
from serve_app.policy.api_keys import hash_api_key

# Test callers: key -> (name, ceiling, requests/s, fair-share weight). Only digests reach the app's config.
API_KEYS = {
    "key-gold": ("gold", "interactive", None, 1.0),
    "key-bronze": ("bronze", "batch", None, 1.0),
    "key-limited": ("limited", "batch", 1.0, 1.0),
    # Two callers sharing classes (tests/integration/test_fair_shares_through_the_app.py); the light one weighs more.
    "key-heavy": ("heavy", "standard", None, 1.0),
    "key-light": ("light", "standard", None, 2.0),
}


@pytest.fixture(scope="session")
def app_config(tmp_path_factory):
    return parse_config({
        "model": {"synthetic_shape": "tiny", "cache_dir": str(tmp_path_factory.mktemp("models"))},
        # vLLM's pythonic tool parser needs no special tokens (the synthetic tokenizer has none for tools).
        # An event per token, as `vllm serve` streams by default: the pacing and coalescing tests count
        # events against tokens (the product's default of 8 per event runs in the faults app).
        "engine": {"max_model_len": 512, "stream_interval": 1,
                   "frontend": {"tool_call_parser": "pythonic", "enable_auto_tool_choice": True,
                                "enable_tokenizer_info_endpoint": True}},
        # Request size limits below the 512-token context, so that tests can reach each of them.
        # A writes budget one stream never reaches on the CPU but a dozen share out (test_stream_pacing).
        "http": {"port": free_port(), "max_prompt_tokens": 400, "max_output_tokens": 480, "max_messages": 64,
                 "max_stop_sequences": 3, "stream_writes_per_s": 100},
        # Spans stay in each process for tests/integration/test_observability.py to read back.
        "telemetry": {"tracing_exporter": "memory", "metrics_export_port": free_port()},
        # batch's short queue deadline lets a test flood reach admission control on a tiny CPU model.
        "priority_classes": [
            {"name": "interactive", "ttft_slo_s": 0.5, "tpot_slo_s": 0.1, "queue_deadline_s": 2},
            {"name": "standard", "ttft_slo_s": 2, "tpot_slo_s": 0.2, "queue_deadline_s": 30},
            {"name": "batch", "ttft_slo_s": 30, "tpot_slo_s": 1, "queue_deadline_s": 4, "stream_coalesce_s": 0.3},
        ],
        "default_priority": "standard",
        # A small starting window so a flood the CPU can drive still queues in the router.
        "router": {"initial_window": 4},
        "auth": {"keys": [{"name": name, "sha256": hash_api_key(key), "ceiling": ceiling, "rate_limit_rps": rate,
                           "burst": 2, "weight": weight}
                          for key, (name, ceiling, rate, weight) in API_KEYS.items()],
                 "anonymous_ceiling": "standard"},
    })


@pytest.fixture(scope="session")
def base_url(app_config):
    from serve_app.local import start_local, stop_local

    if os.environ.get("LLMSERVE_TEST_URL"):  # an app already started by `python tests/integration/conftest.py`
        yield os.environ["LLMSERVE_TEST_URL"]
        return
    url = start_local(app_config)
    yield url
    stop_local()


@pytest.fixture(scope="session", params=["pull", "direct"])
def faults_url(request, app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    """A side app with two LLM replicas and two ingress replicas, for the tests that kill processes
    (test_process_faults, test_replica_faults) and route by cache (test_routing_by_cache); the shared app
    stays untouched. Each of those tests runs with parts delivered by pull and direct (one app at a time:
    pytest ends the first before it makes the second)."""
    from fault_helpers import FAULTS_APP, FAULTS_HTTP, wait_for_routable

    from serve_app.local import delete_side_app, deploy_side_app

    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("kills actors of the Ray cluster this session started")
    data = app_config.model_dump(mode="json")
    # A hung engine is taken as such after 15 s (test_replica_faults stops one); a step of the tiny CPU model
    # takes milliseconds.
    # Responses stored by vLLM (test_stored_responses: found on whichever of the two replicas made them).
    data["replicas"] = {**data["replicas"], "num_replicas": 2, "engine_stuck_after_s": 15,
                        "env": {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}}
    # Room for streams that outlast the abort of a killed ingress's requests (test_process_faults: by pull
    # they are aborted only once it has been silent for 3 s, and 470 tokens took 6-8 s here in all).
    data["engine"] = {**data["engine"], "stream_interval": EngineSettings.model_fields["stream_interval"].default,
                      "max_model_len": 2048}
    # By pull, the ingress kill also tests the LLM replicas' silence limit against a live ingress; direct, that
    # a closed connection abandons the dead ingress's runs and a killed replica's connection fails its runs.
    data["http"] = {**data["http"], "ingress_replicas": 2, "delivery": request.param, "max_output_tokens": 1600}
    if request.param == "direct":  # the LLM replicas listen in a named range (a NetworkPolicy's), replacements too
        data["http"]["direct_ports"] = list(free_port_range(4))
    # Routing by the engines' KV cache events (test_routing_by_cache); the fault tests run with it on too.
    data["router"] = {**data["router"], "routing": "precise_prefix"}
    url = deploy_side_app(parse_config(data), FAULTS_APP)
    wait_for_routable(url, 2)
    FAULTS_HTTP.clear()
    FAULTS_HTTP.update(data["http"])
    yield url
    delete_side_app(FAULTS_APP)


def dev_app() -> None:
    """Start the test app and keep it serving (for working on integration tests by hand)."""
    import time

    from serve_app.local import start_local

    class Factory:
        def mktemp(self, name):
            path = Path("/tmp/llmserve-dev") / name
            path.mkdir(parents=True, exist_ok=True)
            return path

    config = app_config.__wrapped__(Factory())
    print("serving", start_local(config), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    dev_app()


@pytest.fixture(scope="session")
def model_name(app_config) -> str:
    return app_config.model.served_name


@pytest.fixture(scope="session")
def tokenizer(app_config, base_url):
    from transformers import AutoTokenizer

    from serve_app.synthetic_model import ensure_model

    # With LLMSERVE_TEST_URL the app's checkpoint is elsewhere; the same shape gives the same tokenizer.
    return AutoTokenizer.from_pretrained(str(ensure_model(app_config.model.synthetic_shape,
                                                         app_config.model.resolved_path())))


@pytest.fixture()
def client(base_url):
    from openai import OpenAI

    with OpenAI(base_url=f"{base_url}/v1", api_key="key-gold", max_retries=0, timeout=120) as c:
        yield c
