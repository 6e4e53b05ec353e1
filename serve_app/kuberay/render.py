"""RayService (ray.io/v1) manifest for the llmserve app, rendered from its AppConfig.

Pure: config in, dict out; every inconsistency raises ManifestError before any YAML exists.
On /health: the app's health route gates the *worker* pods' readiness, never the head's. KubeRay
submits serveConfigV2 only once the head Pod is Ready (rayservice_controller reconcileServe), and
/health answers 200 only after the app runs, so a head probe on it would never let the app deploy.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from serve_app.config import AppConfig
from serve_app.kuberay.pods import head_template, worker_template
from serve_app.ray_env import ray_serve_env
from serve_app.kuberay.serve_config import effective_autoscaling, replica_range, serve_config
from serve_app.kuberay.settings import ClusterSettings, ManifestError, ModelStorage
from serve_app.kuberay.sizing import model_volume_size, object_store_bytes, quantity_bytes, worker_shape

RAY_VERSION = "2.60.0"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# KubeRay appends suffixes (-raycluster-xxxxx, -head-svc, -serve-svc) to the name; 63-char labels.
MAX_NAME_LEN = 40


def _check_name(kind: str, value: str, limit: int) -> None:
    if not _DNS_LABEL.match(value) or len(value) > limit:
        raise ManifestError(f"{kind} {value!r} must be a DNS-1123 label of at most {limit} characters "
                            "(lowercase letters, digits, '-')")


def render_rayservice(config: AppConfig, *, name: str, image: str, namespace: str | None = None,
                      autoscaling: dict[str, Any] | None = None, model_storage: ModelStorage,
                      cluster: ClusterSettings | None = None,
                      model_hf_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The RayService dict. LLMReplica autoscales per the config's `autoscaling:` section, or per
    `autoscaling` (a Serve autoscaling_config) when that section is off; neither: fixed replicas."""
    cluster = cluster or ClusterSettings()
    if config.http.direct_ingress_port is not None:
        # Clients would have to reach each ingress replica's own port on whichever pod it landed on;
        # the RayService's serve Service targets the head's proxy.
        raise ManifestError("http.direct_ingress_port is for `llmserve run` on one node; remove it for KubeRay")
    autoscaling = effective_autoscaling(config, autoscaling)
    _check_name("name", name, MAX_NAME_LEN)
    if namespace is not None:
        _check_name("namespace", namespace, 63)
    _check_name("worker group", cluster.worker_group, 63)
    if not image or any(c.isspace() for c in image):
        raise ManifestError(f"image {image!r} must be a non-empty image reference")
    for quantity in (cluster.head_memory, cluster.head_shm, cluster.worker_shm):
        quantity_bytes(quantity)
    port = config.http.port
    shape = worker_shape(config, cluster, model_hf_config)
    counts = replica_range(config, autoscaling)
    serve = serve_config(config, model_storage, autoscaling, port)
    model_size = model_volume_size(model_storage.size_limit, shape.weight_bytes)
    synthetic = config.model.synthetic_shape
    worker_group = {
        "groupName": cluster.worker_group,
        "replicas": shape.workers_for(counts.initial),
        "minReplicas": shape.workers_for(counts.minimum),
        "maxReplicas": shape.workers_for(counts.maximum),
        "rayStartParams": {"object-store-memory": object_store_bytes(cluster.worker_shm)},
        "template": worker_template(image=image, cluster=cluster, storage=model_storage, model_size=model_size,
                                    shape=synthetic, port=port, cpu=shape.cpu, memory=shape.memory,
                                    gpus=shape.gpus, env=ray_serve_env(config.http),
                                    compile_cache_dir=config.engine.compile_cache_dir),
    }
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/name": "llmserve", "app.kubernetes.io/component": "rayservice"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "serveConfigV2": dump_yaml(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": cluster.autoscaler_idle_timeout_s,
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                                  "requests": {"cpu": "500m", "memory": "512Mi"}},
                },
                "headGroupSpec": {
                    # num-cpus 0: no CPU-requesting task lands on the head; the Serve controller, proxy,
                    # Ingress and Controller both ask for 0 CPUs and still run there.
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                                       "object-store-memory": object_store_bytes(cluster.head_shm)},
                    # Ray Serve's data-plane switches are read from every Ray process's environment.
                    "template": head_template(image=image, cluster=cluster, port=port,
                                              env=ray_serve_env(config.http)),
                },
                "workerGroupSpecs": [worker_group],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, literal `|` for multi-line strings, key order as built, no &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any) -> str:
    """Deterministic YAML text: insertion order kept, no line folding, literal blocks."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100_000,
                     allow_unicode=True)
