"""Pod templates of the RayCluster: head and worker group, with the model volume and /dev/shm.

The head runs Ray's control plane plus the CPU-only deployments (Ingress, which routes, and Controller), which
read no model file (requests are tokenized once, by vLLM on the replica): no GPU and no model volume.
Workers run the LLMReplica actors and hold the model.
"""
from __future__ import annotations

from typing import Any

from serve_app.kuberay.settings import ClusterSettings, ModelStorage

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
MODEL_VOLUME = "model"
COMPILE_CACHE_VOLUME = "compile-cache"
SHM_VOLUME = "shared-mem"  # KubeRay's own name for it, so it does not add a second /dev/shm
HEALTH_PATH = "/health"


def init_resources() -> dict[str, Any]:
    """Resources of a model initContainer (a fresh dict each time)."""
    return {"limits": {"cpu": "2", "memory": "2Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}



def resources(cpu: str, memory: str, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    """requests == limits (Guaranteed-style): Ray reads its CPU/GPU/memory from the limits."""
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[gpu_resource] = gpus
    return {"limits": dict(amounts), "requests": dict(amounts)}


def shm_volume(size: str) -> dict[str, Any]:
    """Memory-backed /dev/shm; its use counts against the pod's memory limit."""
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def model_volume(storage: ModelStorage, size: str) -> dict[str, Any]:
    """The PVC (read-only) or an emptyDir the initContainer fills."""
    if storage.kind == "pvc":
        return {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": storage.claim_name, "readOnly": True}}
    return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": size}}


def model_mount(storage: ModelStorage, *, writable: bool = False) -> dict[str, Any]:
    """Mount of the model volume at storage.mount_path (read-only in the Ray containers)."""
    mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": storage.mount_path, "readOnly": not writable}
    if storage.kind == "pvc" and storage.sub_path:
        mount["subPath"] = storage.sub_path
    return mount


def model_init_containers(storage: ModelStorage, *, app_image: str, shape: str,
                          pull_policy: str) -> list[dict[str, Any]]:
    """initContainers that put the model in place before Ray starts (none for a PVC)."""
    if storage.kind == "pvc":
        return []
    mount = [model_mount(storage, writable=True)]
    if storage.kind == "synthetic":
        command = ["llmserve", "make-model", shape, "--out", f"{storage.mount_path}/{shape}", "--seed", "0"]
        return [{"name": "make-model", "image": app_image, "imagePullPolicy": pull_policy, "command": command,
                 "resources": init_resources(), "volumeMounts": mount}]
    command = ["aws", "s3", "cp", "--recursive", "--only-show-errors"]
    if storage.endpoint_url:
        command += ["--endpoint-url", storage.endpoint_url]
    command += [str(storage.uri), storage.mount_path]
    container: dict[str, Any] = {"name": "model-download", "image": storage.download_image,
                                 "imagePullPolicy": pull_policy, "command": command}
    if storage.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": storage.credentials_secret}}]
    container["resources"] = init_resources()
    container["volumeMounts"] = mount
    return [container]


def _pod_spec(container: dict[str, Any], init: list[dict[str, Any]], volumes: list[dict[str, Any]],
              extra: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dict(extra)
    if init:
        spec["initContainers"] = init
    spec["containers"] = [container]
    spec["volumes"] = volumes
    return {"spec": spec}


def container_env(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in sorted(env.items())]


def head_template(*, image: str, cluster: ClusterSettings, port: int,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """Head pod: no GPU, no model; KubeRay injects its own GCS/raylet probes (see render.py on /health)."""
    container = {
        "name": HEAD_CONTAINER,
        "image": image,
        "imagePullPolicy": cluster.image_pull_policy,
        "ports": [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": port, "name": "serve"},
        ],
        "resources": resources(cluster.head_cpu, cluster.head_memory),
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }
    if env:
        container["env"] = container_env(env)
    return _pod_spec(container, [], [shm_volume(cluster.head_shm)], {})


def worker_template(*, image: str, cluster: ClusterSettings, storage: ModelStorage, model_size: str,
                    shape: str, port: int, cpu: str, memory: str, gpus: int,
                    env: dict[str, str] | None = None, compile_cache_dir: str | None = None) -> dict[str, Any]:
    """Worker pod: the replica's GPUs, the weights, the compile caches' shared volume (when the config
    names a directory for them), and a readiness probe on the Serve /health route."""
    container = {
        "name": WORKER_CONTAINER,
        "image": image,
        "imagePullPolicy": cluster.image_pull_policy,
        "resources": resources(cpu, memory, gpus, cluster.gpu_resource),
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": port},
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}, model_mount(storage)],
    }
    if env:
        container["env"] = container_env(env)
    init = model_init_containers(storage, app_image=image, shape=shape, pull_policy=cluster.image_pull_policy)
    volumes = [shm_volume(cluster.worker_shm), model_volume(storage, model_size)]
    if compile_cache_dir:
        container["volumeMounts"].append({"name": COMPILE_CACHE_VOLUME, "mountPath": compile_cache_dir})
        volumes.append({"name": COMPILE_CACHE_VOLUME,
                        "persistentVolumeClaim": {"claimName": cluster.compile_cache_claim}})
    extra: dict[str, Any] = {}
    if cluster.accelerator == "gpu":
        if cluster.node_selector:
            extra["nodeSelector"] = dict(cluster.node_selector)
        if cluster.tolerations:
            extra["tolerations"] = [dict(t) for t in cluster.tolerations]
    return _pod_spec(container, init, volumes, extra)
