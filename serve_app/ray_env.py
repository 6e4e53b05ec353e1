"""Environment variables Ray Serve reads when Ray starts, from the config's `http` section.

Ray Serve takes its data-plane choices from the environment of its processes, not from the
application: `llmserve run` sets them before starting local Ray, the KubeRay manifests put them in
every pod's container environment.
"""
from __future__ import annotations

from serve_app.config import HttpSettings

DIRECT_INGRESS_PORT_SPAN = 99  # ports a direct ingress may take above the first (replicas, restarts)


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
    return env
