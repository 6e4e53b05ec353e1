"""Typed inputs of the RayService renderer: model storage and cluster shape.

Everything Kubernetes-specific that is not part of the service config (``AppConfig``) lives here,
so a bad value fails in pydantic with the field named instead of in the cluster.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.strict_model import StrictModel


class ManifestError(ValueError):
    """A config or setting that cannot be turned into a working RayService; the message says why."""


class ModelStorage(StrictModel):
    """Where the model's files come from inside the worker pods (the head reads none)."""

    kind: Literal["pvc", "object_store", "synthetic"] = Field(
        description="`pvc`: a PersistentVolumeClaim mounted read-only (ReadOnlyMany across nodes); "
        "`object_store`: an initContainer copies `uri` into an emptyDir; `synthetic`: an initContainer "
        "runs `llmserve make-model` in the app image (config's model.path must be empty).",
    )
    mount_path: str = Field("/models", description="Directory the model volume is mounted at in every pod.")
    claim_name: str | None = Field(None, description="PVC name (kind pvc).")
    sub_path: str | None = Field(None, description="Directory inside the PVC that holds the model (kind pvc).")
    uri: str | None = Field(None, description="`s3://bucket/prefix/` of the checkpoint (kind object_store).")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, R2...); empty: AWS.")
    download_image: str = Field("amazon/aws-cli:2.17.0", description="Image of the copy initContainer.")
    credentials_secret: str | None = Field(
        None, description="Secret whose keys (AWS_ACCESS_KEY_ID, ...) become the copy container's env."
    )
    size_limit: str | None = Field(
        None, description="emptyDir sizeLimit (object_store/synthetic); empty: weights x 1.2 + 2Gi, else 64Gi."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ModelStorage:
        if not self.mount_path.startswith("/"):
            raise ValueError(f"mount_path must be absolute, got {self.mount_path!r}")
        if self.kind == "pvc" and not self.claim_name:
            raise ValueError("kind 'pvc' needs claim_name")
        if self.kind == "object_store" and not (self.uri or "").startswith("s3://"):
            raise ValueError(f"kind 'object_store' needs an s3:// uri, got {self.uri!r}")
        return self


def _default_tolerations() -> list[dict[str, Any]]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class ClusterSettings(StrictModel):
    """Pod shapes of the RayCluster; defaults are the GPU production shape."""

    accelerator: Literal["gpu", "cpu"] = Field(
        "gpu", description="`gpu`: replicas need config.replicas.num_gpus > 0; `cpu`: num_gpus must be 0."
    )
    worker_group: str = Field("gpu-workers", description="Worker group name.")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the GPU.")
    gpus_per_worker: int | None = Field(
        None, gt=0, description="GPUs per worker pod; empty: one replica's GPUs rounded up."
    )
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Worker nodeSelector (gpu only; set by the NVIDIA GPU operator's feature discovery).",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=_default_tolerations, description="Worker tolerations (gpu only)."
    )
    head_cpu: str = Field("4", description="Head CPU request = limit (GCS, dashboard, Serve controller, "
                          "proxy, Ingress with its routing).")
    head_memory: str = Field("16Gi", description="Head memory request = limit.")
    head_shm: str = Field("2Gi", description="Head /dev/shm (object store) size.")
    worker_shm: str = Field("8Gi", description="Worker /dev/shm size: Ray object store + torch IPC.")
    worker_cpu: str | None = Field(None, description="Worker CPU; empty: replicas' num_cpus + 3.")
    worker_memory: str | None = Field(None, description="Worker memory; empty: from the model's weights.")
    autoscaler_idle_timeout_s: int = Field(300, ge=0, description="Idle seconds before a worker is removed.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    compile_cache_claim: str = Field(
        "llmserve-compile-cache", description="PersistentVolumeClaim (ReadWriteMany) mounted in every worker "
        "pod at engine.compile_cache_dir, when the config sets it: compiled graphs and kernels shared, so a "
        "replica that autoscaling adds on a new node starts warm.",
    )
