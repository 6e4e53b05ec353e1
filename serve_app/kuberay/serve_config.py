"""Ray Serve deploy config (RayService ``serveConfigV2``) for the llmserve application.

The app's own config travels as the application's ``args`` (``app_builder`` parses it); only the
LLMReplica deployment gets overrides, because they are what the Kubernetes side must agree with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.config import AppConfig
from serve_app.kuberay.settings import ManifestError, ModelStorage
from serve_app.replica_options import replica_actor_options

APP_NAME = "llmserve"
IMPORT_PATH = "serve_app.app:app_builder"
REPLICA_DEPLOYMENT = "LLMReplica"
# Set so rendered output never depends on the rendering machine's home directory.
POD_CACHE_DIR = "/tmp/llmserve/models"


@dataclass(frozen=True)
class ReplicaRange:
    """LLMReplica counts Serve will run: at start, at least and at most."""

    initial: int
    minimum: int
    maximum: int


def pod_model_config(config: AppConfig, storage: ModelStorage) -> dict[str, Any]:
    """The app config as JSON with model.path (and cache_dir) pointing where the pods see the model."""
    data = config.model_dump(mode="json")
    if storage.kind == "synthetic":
        if config.model.path:
            raise ManifestError(f"model storage 'synthetic' generates the model, but model.path is set "
                                f"({config.model.path!r}); empty it or use pvc/object_store")
        data["model"]["path"] = None
        data["model"]["cache_dir"] = storage.mount_path
    else:
        if not config.model.path:
            raise ManifestError(f"model.path is empty (a synthetic model) but model storage is "
                                f"{storage.kind!r}; set model.path or use kind 'synthetic'")
        data["model"]["path"] = storage.mount_path
        data["model"]["cache_dir"] = POD_CACHE_DIR
    data["http"]["host"] = "0.0.0.0"  # what http_options binds in the pods (the app itself ignores it there)
    return data


def _count(autoscaling: dict[str, Any], key: str, default: int | None) -> int | None:
    value = autoscaling.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(f"autoscaling.{key} must be a non-negative integer, got {value!r}")
    return value


def replica_range(config: AppConfig, autoscaling: dict[str, Any] | None) -> ReplicaRange:
    """Replica counts from the fixed num_replicas, or from a Serve autoscaling_config (checked)."""
    if autoscaling is None:
        n = config.replicas.num_replicas
        return ReplicaRange(n, n, n)
    if not isinstance(autoscaling, dict):
        raise ManifestError(f"autoscaling must be a mapping (Serve autoscaling_config), got {type(autoscaling).__name__}")
    if "max_replicas" not in autoscaling:
        raise ManifestError("autoscaling.max_replicas is required (it sizes the GPU worker group's maxReplicas)")
    low = _count(autoscaling, "min_replicas", 1)
    high = _count(autoscaling, "max_replicas", None)
    assert low is not None and high is not None
    if high < 1:
        raise ManifestError(f"autoscaling.max_replicas must be >= 1, got {high}")
    if low > high:
        raise ManifestError(f"autoscaling.min_replicas ({low}) > autoscaling.max_replicas ({high})")
    initial = _count(autoscaling, "initial_replicas", None)
    if initial is not None and not low <= initial <= high:
        raise ManifestError(f"autoscaling.initial_replicas ({initial}) is outside [min_replicas, max_replicas] "
                            f"= [{low}, {high}]")
    return ReplicaRange(low if initial is None else initial, low, high)


def effective_autoscaling(config: AppConfig, override: dict[str, Any] | None) -> dict[str, Any] | None:
    """The config's `autoscaling:` section as Serve's autoscaling_config, or `override` (a load-test result's)
    when the section is off; both at once is refused so one place decides."""
    own = config.autoscaling.serve_autoscaling_config([c.name for c in config.priority_classes])
    if own is not None and override is not None:
        raise ManifestError("autoscaling is set both in the config (autoscaling.enabled) and from --autoscaling; "
                            "keep one (`llmserve autoscale --write` puts a sweep's values in the config)")
    return own if own is not None else override


def serve_config(config: AppConfig, storage: ModelStorage, autoscaling: dict[str, Any] | None,
                 port: int) -> dict[str, Any]:
    """The deploy schema dict; validated with Ray Serve's own ServeDeploySchema."""
    replica_range(config, autoscaling)
    if autoscaling is not None:
        validate_autoscaling(autoscaling)
    replica: dict[str, Any] = {"name": REPLICA_DEPLOYMENT}
    if autoscaling is None:
        replica["num_replicas"] = config.replicas.num_replicas
    else:
        replica["autoscaling_config"] = dict(autoscaling)
    replica["max_ongoing_requests"] = config.replicas.max_ongoing_requests
    replica["ray_actor_options"] = replica_actor_options(config)
    document = {
        "http_options": {"host": "0.0.0.0", "port": port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": {"config": pod_model_config(config, storage)},
            "deployments": [replica],
        }],
    }
    validate_serve_config(document)
    return document


def validate_autoscaling(autoscaling: dict[str, Any]) -> None:
    """ManifestError on keys Ray Serve's AutoscalingConfig does not know (it ignores them) or bad values."""
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    unknown = sorted(set(autoscaling) - set(AutoscalingConfig.model_fields))
    if unknown:
        raise ManifestError(f"autoscaling has keys Ray Serve does not know: {unknown}")
    try:
        AutoscalingConfig(**autoscaling)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ManifestError(f"autoscaling rejected by Ray Serve: {problems}") from None


def validate_serve_config(document: dict[str, Any]) -> None:
    """ManifestError unless Ray Serve's ServeDeploySchema accepts `document`."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ManifestError(f"serveConfigV2 rejected by Ray Serve's schema: {problems}") from None

