"""Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), whatever raised them."""
from __future__ import annotations

import json
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import openai_api as api
from serve_app.deployments.errors import ReplicaFailed
from serve_app.openai_api import ApiError
from serve_app.policy.router_core import Refusal
from serve_app.telemetry.log_names import service_logger

logger = service_logger("ingress")


def metrics_not_here() -> ApiError:
    """`GET /metrics`, where `vllm serve` has it (`vllm bench serve` and scrapers ask there)."""
    return ApiError(404, "Metrics are not on the API port: they are exported through Ray's metrics port on each "
                    "node (KubeRay's pod monitors scrape it), ours as ray_llmserve_* and vLLM's engine metrics as "
                    "ray_vllm_* with each replica's ReplicaId", code="metrics_on_ray_metrics_port")


def is_anthropic_route(path: str) -> bool:
    """Anthropic's Messages API (`/v1/messages`, its `/count_tokens`): its own error shape."""
    return path.startswith("/v1/messages")


def anthropic_error_body(error_type: str, message: str) -> dict:
    """Anthropic's error shape, as vLLM's own Anthropic handler words it (the OpenAI error type kept)."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def path_in_app(request: Request) -> str:
    """The request's path below the application's route prefix (Ray Serve's `route_prefix`, a mount):
    `/v1/messages` whether the app is served at `/` or at `/llm`."""
    path, prefix = request.url.path, request.scope.get("root_path", "").rstrip("/")
    return path[len(prefix):] if prefix and path.startswith(prefix + "/") else path


def shaped_for(request: Request, body: dict) -> dict:
    """An error body in the shape the route's API answers: Anthropic's on its routes, OpenAI's elsewhere."""
    if not is_anthropic_route(path_in_app(request)):
        return body
    return anthropic_error_body(body["error"]["type"], body["error"]["message"])


def install_error_handlers(app: FastAPI) -> None:
    """Our `ApiError`s, unknown routes and methods, and anything unexpected, in the route's API's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(shaped_for(request, error.body()), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """Not FastAPI's `{"detail": ...}`."""
        if error.status_code == 404:
            message = f"no route {request.url.path}; see /docs for the API"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        body = api.error_body(message, "invalid_request_error", code="not_found" if error.status_code == 404 else None)
        return JSONResponse(shaped_for(request, body), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(shaped_for(request, api.error_body("internal server error", "server_error")),
                            status_code=500)


def openai_error_shape(body: bytes, status: int) -> bytes:
    """vLLM's app answers a few errors in FastAPI's `{"detail": ...}` (a body it cannot parse): in
    OpenAI's shape, as vLLM's own handler words its others."""
    if status < 400 or not body.startswith(b'{"detail"'):
        return body
    detail = json.loads(body)["detail"]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return json.dumps(api.error_body(detail if isinstance(detail, str) else json.dumps(detail), phrase,
                                     code=status)).encode()


def refusal_error(refusal: Refusal) -> ApiError:
    error_type = "rate_limit_error" if refusal.status == 429 else "server_error"
    return ApiError(refusal.status, refusal.message, error_type=error_type, code=refusal.code,
                    headers={"Retry-After": str(refusal.retry_after_s)})


# A request whose replica failed before anything of its answer was written, after its re-routes: nothing was
# served, and the same request may be sent again at once (a replacement replica or the survivors take it).
REPLICA_FAILED_RETRY_AFTER_S = 1


def replica_failed_error(message: str) -> ApiError:
    return ApiError(503, message, error_type="server_error", code="replica_failed",
                    headers={"Retry-After": str(REPLICA_FAILED_RETRY_AFTER_S)})


def describe_failure(error: BaseException) -> str:
    if isinstance(error, ReplicaFailed):
        return "the model replica serving this request failed; retry"
    return "internal error while generating; the response is incomplete"


def stream_error_event(message: str, path: str = "") -> bytes:
    """An error event and the end of the stream, as vLLM's own server ends a stream that failed; on
    Anthropic's `/v1/messages`, its `error` event (its streams have no `[DONE]`)."""
    if is_anthropic_route(path):
        return f"event: error\ndata: {json.dumps(anthropic_error_body('api_error', message))}\n\n".encode()
    body = api.error_body(message, "server_error", code="stream_failed")
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()
