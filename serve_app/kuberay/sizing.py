"""Pod sizes derived from the service config: worker counts, CPUs and host memory.

Host-memory model (per worker pod, request = limit so the kubelet never OOM-kills on a burst):
  replicas_per_worker x (weights + 6 GiB vLLM/torch/CUDA host footprint)
  + /dev/shm size (memory-backed, charged to the pod) + 2 GiB for raylet, proxy and agent.
Weights come from ``serve_app.memory`` when a model ``config.json`` dict is given; without one the
worker gets DEFAULT_WORKER_MEMORY_GIB (32 GiB covers a 7-8B fp16 checkpoint on one GPU).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serve_app.config import AppConfig
from serve_app.kuberay.settings import ClusterSettings, ManifestError

GIB = 1 << 30
REPLICA_HOST_OVERHEAD_GIB = 6
RAY_DAEMONS_GIB = 2
WORKER_EXTRA_CPUS = 3  # vLLM engine-core busy loop, raylet, Serve proxy
DEFAULT_WORKER_MEMORY_GIB = 32
DEFAULT_MODEL_VOLUME = "64Gi"
OBJECT_STORE_SHARE_OF_SHM = 0.8

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": GIB, "Ti": 1 << 40, "k": 10**3, "M": 10**6,
          "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity such as ``8Gi``; ManifestError on anything else."""
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise ManifestError(f"memory quantity {quantity!r} is not of the form <number>[Ki|Mi|Gi|Ti|k|M|G|T]")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def gib(n_bytes: float) -> str:
    """A quantity in whole GiB, rounded up."""
    return f"{math.ceil(n_bytes / GIB)}Gi"


@dataclass(frozen=True)
class WorkerShape:
    """One worker pod and how many of them the replica counts need."""

    gpus: int
    replicas_per_worker: int
    cpu: str
    memory: str
    weight_bytes: int | None

    def workers_for(self, replicas: int) -> int:
        """Pods needed to place `replicas` LLM replicas (0 replicas -> 0 pods)."""
        return math.ceil(replicas / self.replicas_per_worker)


def model_weight_bytes(hf_config: Mapping[str, Any] | None) -> int | None:
    """Bytes of the weights as loaded on the GPU (serve_app.memory), or None without a config.json."""
    if hf_config is None:
        return None
    from serve_app.memory.budget import ModelShape, weight_bytes

    try:
        return weight_bytes(ModelShape.from_hf_config(hf_config)).total
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"model config.json cannot be sized: {error!r}") from None


def worker_shape(config: AppConfig, cluster: ClusterSettings, hf_config: Mapping[str, Any] | None) -> WorkerShape:
    """Worker pod resources; raises ManifestError when a replica cannot fit one pod."""
    num_gpus = config.replicas.num_gpus
    if cluster.accelerator == "gpu":
        if num_gpus <= 0:
            raise ManifestError("replicas.num_gpus is 0 but the GPU profile needs GPUs per replica "
                                "(set replicas.num_gpus, e.g. 1, or render the dev-cpu profile)")
        gpus = cluster.gpus_per_worker or math.ceil(num_gpus)
        if num_gpus > gpus:
            raise ManifestError(f"replicas.num_gpus={num_gpus} does not fit a worker with "
                                f"gpus_per_worker={gpus}")
        per_worker = int(gpus // num_gpus)
    else:
        if num_gpus > 0:
            raise ManifestError(f"replicas.num_gpus={num_gpus} but the cpu profile has no GPUs; set it to 0")
        gpus, per_worker = 0, 1
    weights = model_weight_bytes(hf_config)
    cpu = cluster.worker_cpu or str(math.ceil(per_worker * config.replicas.num_cpus) + WORKER_EXTRA_CPUS)
    if cluster.worker_memory:
        quantity_bytes(cluster.worker_memory)
        memory = cluster.worker_memory
    elif weights is None:
        memory = f"{DEFAULT_WORKER_MEMORY_GIB}Gi"
    else:
        per_replica = weights + REPLICA_HOST_OVERHEAD_GIB * GIB
        memory = gib(per_worker * per_replica + quantity_bytes(cluster.worker_shm) + RAY_DAEMONS_GIB * GIB)
    return WorkerShape(gpus=gpus, replicas_per_worker=per_worker, cpu=cpu, memory=memory, weight_bytes=weights)


def object_store_bytes(shm: str) -> str:
    """`object-store-memory` start param that keeps Ray's object store inside /dev/shm."""
    return str(int(quantity_bytes(shm) * OBJECT_STORE_SHARE_OF_SHM))


def model_volume_size(size_limit: str | None, weights: int | None) -> str:
    """emptyDir sizeLimit for a copied/generated model: explicit, weights x 1.2 + 2Gi, or 64Gi."""
    if size_limit:
        quantity_bytes(size_limit)
        return size_limit
    if weights is None:
        return DEFAULT_MODEL_VOLUME
    return gib(weights * 1.2 + 2 * GIB)
