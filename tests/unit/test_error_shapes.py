"""Our errors in the shape of the API a route belongs to: OpenAI's, or Anthropic's on `/v1/messages`."""
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from serve_app.http.errors import install_error_handlers
from serve_app.openai_api import ApiError


def _client(route_prefix: str = "/") -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/messages")
    @app.post("/v1/chat/completions")
    async def refuse():
        raise ApiError(429, "class low is overloaded", error_type="rate_limit_error", code="overloaded",
                       headers={"Retry-After": "3"})

    @app.post("/v1/messages/count_tokens")
    async def fail():
        raise RuntimeError("boom")

    if route_prefix != "/":  # as Ray Serve serves an application under its route prefix
        app = Starlette(routes=[Mount(route_prefix, app=app)])
    return TestClient(app, raise_server_exceptions=False)


def test_an_anthropic_route_gets_anthropics_error_shape_with_the_same_status_and_headers():
    response = _client().post("/v1/messages", json={})
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json() == {"type": "error", "error": {"type": "rate_limit_error",
                                                          "message": "class low is overloaded"}}
    unexpected = _client().post("/v1/messages/count_tokens", json={})
    assert unexpected.status_code == 500 and unexpected.json()["type"] == "error"


def test_openai_routes_and_unknown_routes_keep_openais_shape():
    response = _client().post("/v1/chat/completions", json={})
    assert response.json() == {"error": {"type": "rate_limit_error", "message": "class low is overloaded",
                                         "param": None, "code": "overloaded"}}
    assert set(_client().get("/v1/nothing").json()["error"]) == {"message", "type", "param", "code"}
    assert _client().get("/v1/messages/nothing").json()["error"]["type"] == "invalid_request_error"


def test_the_shape_follows_the_route_under_an_application_route_prefix():
    client = _client("/llm")
    assert client.post("/llm/v1/messages", json={}).json()["type"] == "error"
    assert client.post("/llm/v1/messages/count_tokens", json={}).json()["type"] == "error"
    assert "param" in client.post("/llm/v1/chat/completions", json={}).json()["error"]


def test_a_request_whose_replica_failed_is_answered_503_with_retry_after():
    """Nothing of it was written (whole answers come at their end), so the client may send it again at once."""
    from serve_app.http.errors import replica_failed_error

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/completions")
    async def lost():
        raise replica_failed_error("the model replica serving this request failed; retry")

    answer = TestClient(app, raise_server_exceptions=False).post("/v1/completions")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "replica_failed"
