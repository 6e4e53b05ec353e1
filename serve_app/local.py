"""Runs the application on a local Ray (started in-process): the embedded default and the tests."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import httpx

from serve_app.config import AppConfig, ConfigError
from serve_app.engine_processes import RaySession, end_processes, raylet_of, session_engine_pids
from serve_app.ray_env import QUIET_RAY_ENV, check_front_installed, ray_serve_env
from serve_app.shared_memory import remove_orphaned_segments, vllm_segments
from serve_app.synthetic_model import check_draft_shape, ensure_model
from serve_app.telemetry.log_names import service_logger

logger = service_logger("local")
APP_NAME = "llmserve"
SHM_RELEASE_WAIT_S = 15.0  # engine processes may still be exiting when Ray's shutdown returns
ENGINE_EXIT_GRACE_S = 10.0  # a SIGTERMed vLLM engine shuts down in seconds; then SIGKILL
# /dev/shm segments that existed before this process started Ray: not ours to remove at stop.
_segments_before_start: set | None = None
# The local Ray session this process started: its engines are ours to end at stop, no others.
_ray_session: RaySession | None = None


def prepare_model(config: AppConfig) -> None:
    """Generate the synthetic checkpoints (the model's, a speculative draft's) the config names no path for."""
    if not config.model.path:
        ensure_model(config.model.synthetic_shape, config.model.resolved_path())
    speculative = config.engine.speculative
    if speculative is not None and speculative.synthetic_shape is not None:
        if not config.model.path:
            try:
                check_draft_shape(config.model.synthetic_shape, speculative.synthetic_shape)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        ensure_model(speculative.synthetic_shape, speculative.draft_path(config.model.cache_dir))


def start_local(config: AppConfig, *, engine_overrides: dict[str, Any] | None = None,
                ready_timeout_s: float = 600) -> str:
    """Start local Ray and Ray Serve, deploy the app, wait until it answers; returns the base URL."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    global _segments_before_start, _ray_session
    prepare_model(config)
    if _segments_before_start is None:
        _segments_before_start = vllm_segments()
    direct_port = config.http.direct_ingress_port
    if direct_port is not None and ray.is_initialized():
        raise ConfigError("http.direct_ingress_port: Ray is already running; direct ingress must be on "
                          "when Ray starts (RAY_SERVE_ENABLE_DIRECT_INGRESS)")
    if config.http.front == "haproxy":
        if ray.is_initialized() and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
            raise ConfigError("http.front: haproxy: Ray is already running; HAProxy mode must be on when Ray "
                              "starts (RAY_SERVE_ENABLE_HA_PROXY)")
        try:
            check_front_installed(config.http)
        except RuntimeError as error:
            raise ConfigError(str(error)) from None
    if not ray.is_initialized():
        # Read by Ray Serve's controller, proxy and replicas, which inherit this process's environment.
        os.environ.update(ray_serve_env(config.http))
        for name, value in QUIET_RAY_ENV.items():  # what the user set wins
            os.environ.setdefault(name, value)
        metrics_port = config.telemetry.metrics_export_port
        ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
                 **({"_metrics_export_port": metrics_port} if metrics_port else {}))
        _ray_session = raylet_of(os.getpid())
    serve.start(http_options={"host": config.http.host, "port": config.http.port})
    serve.run(build_app(config, engine_overrides), name=APP_NAME, route_prefix="/", blocking=False)
    base_url = f"http://{config.http.host}:{direct_port or config.http.port}"
    wait_until_ready(base_url, ready_timeout_s)
    return base_url


HealthProbe = Callable[[httpx.Response, float], None]


def deploy_side_app(config: AppConfig, name: str, *, engine_overrides: dict[str, Any] | None = None,
                    ready_timeout_s: float = 600, on_health: HealthProbe | None = None) -> str:
    """Deploy a second application beside the main one (on the running local Ray Serve) under
    `/<name>`; tests that kill or scale replicas use one so the shared app stays untouched.
    Returns its base URL; `delete_side_app(name)` removes it."""
    from ray import serve

    from serve_app.app import build_app

    prepare_model(config)
    base_url = f"http://{config.http.host}:{config.http.port}/{name}"
    app = build_app(config, engine_overrides)
    if on_health is None:
        serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
        wait_until_ready(base_url, ready_timeout_s)
        return base_url
    # `serve.run` returns once every deployment is up, engines included: to see /health while the
    # engines start, the deployment runs beside the polling.
    failure: list[BaseException] = []

    def deploy() -> None:
        try:
            serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)

    deploying = threading.Thread(target=deploy, name=f"deploy-{name}", daemon=True)
    deploying.start()
    wait_until_ready(base_url, ready_timeout_s, on_health, gave_up=lambda: bool(failure))
    deploying.join(ready_timeout_s)
    if failure:
        raise failure[0]
    return base_url


def delete_side_app(name: str) -> None:
    from ray import serve

    serve.delete(name, _blocking=True)


def wait_until_ready(base_url: str, timeout_s: float, on_health: HealthProbe | None = None,
                     gave_up: Callable[[], bool] = lambda: False) -> None:
    """Poll /health until 200 (or until `gave_up()`); `on_health` sees each answer and how long it took."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline and not gave_up():
        try:
            asked = time.monotonic()
            response = httpx.get(f"{base_url}/health", timeout=30)
            if on_health is not None:
                on_health(response, time.monotonic() - asked)
            if response.status_code == 200:
                return
            last_error = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as error:
            last_error = repr(error)
        time.sleep(1)
    if gave_up():
        return
    raise TimeoutError(f"service at {base_url} not healthy after {timeout_s:.0f}s: {last_error}")


def stop_local() -> None:
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:  # also after a second Ctrl-C: Ray must not outlive us
                ray.shutdown()
    finally:
        _end_leftover_engines()
        if _segments_before_start is not None:
            _remove_engine_shared_memory(_segments_before_start)


def _end_leftover_engines() -> None:
    """Engines of this session still running once Ray is down (their replica never shut them down)."""
    if _ray_session is None:
        return
    leftover = session_engine_pids(_ray_session)
    if leftover:
        logger.warning("ending %d vLLM engine processes left running by stopped replicas: %s", len(leftover), leftover)
        end_processes(leftover, ENGINE_EXIT_GRACE_S)


def _remove_engine_shared_memory(existed_before: set) -> None:
    """vLLM's shared memory of the engines this process started, once their processes are gone."""
    deadline = time.monotonic() + SHM_RELEASE_WAIT_S
    while True:
        remove_orphaned_segments(existed_before)
        left = vllm_segments() - existed_before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        logger.warning("%d shared-memory segments still in use after stop: %s", len(left), sorted(map(str, left)))
