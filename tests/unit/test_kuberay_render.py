"""RayService manifests (serve_app/kuberay): CRD schema, Ray Serve schema, drift, sizing, errors."""
from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.config import AppConfig, load_config, parse_config
from serve_app.kuberay import ClusterSettings, ManifestError, ModelStorage, render_rayservice
from serve_app.kuberay.kustomize import cli_render, load_autoscaling, render_all
from serve_app.memory.budget import ModelShape, weight_bytes

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
FIXTURES = ROOT / "tests" / "fixtures"
SCHEMA_FILE = FIXTURES / "kuberay" / "rayservice_v1_schema.json"
SHARED_CRD = Path("/work/shared/kuberay/ray.io_rayservices.yaml")
AWQ_7B = json.loads((FIXTURES / "model_configs" / "llama-2-7b-awq.json").read_text())
GIB = 1 << 30
PVC = ModelStorage(kind="pvc", claim_name="models", sub_path="llama", mount_path="/models/llama")
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources"}


# ---------------------------------------------------------------- schema helpers

def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema, strict about unknown fields like the API server's
    Strict field validation: int-or-string -> anyOf, nullable -> null allowed, closed objects."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _openapi_to_jsonschema(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _unique_list_map_keys(validator, list_type, instance, schema):
    """`x-kubernetes-list-type: map`: no two items may share their list-map-keys (e.g. container names)."""
    if list_type != "map" or not isinstance(instance, list):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        key = tuple(json.dumps(item.get(k)) for k in keys) if isinstance(item, dict) else None
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate list-map key {dict(zip(keys, key))}")
        seen.add(key)


_CrdValidator = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                             {"x-kubernetes-list-type": _unique_list_map_keys})


@pytest.fixture(scope="module")
def crd():
    return _CrdValidator(_openapi_to_jsonschema(json.loads(SCHEMA_FILE.read_text())))


def crd_errors(validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def serve_doc(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def assert_valid(validator, rayservice: dict) -> None:
    assert crd_errors(validator, rayservice) == []
    ServeDeploySchema.model_validate(serve_doc(rayservice))


def kustomize(directory: Path) -> list[dict]:
    """Tiny kustomize: resources (files/dirs), namespace, labels -- and it refuses anything else."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= KUSTOMIZE_KEYS, f"{directory}: the test helper does not apply " \
        f"{sorted(set(kustomization) - KUSTOMIZE_KEYS)}; keep overlays to complete documents"
    docs: list[dict] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        docs += kustomize(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for label_set in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    return docs


def gpu_config(**replicas: Any) -> AppConfig:
    """The committed GPU config with fixed replicas (its measured autoscaling section removed), so each
    test states the autoscaling it is about."""
    data = yaml.safe_load((MANIFESTS / "config" / "gpu-prod.yaml").read_text())
    data.pop("autoscaling", None)
    data["replicas"].update(replicas)
    return parse_config(data)


def gpu_config_with_http(**http) -> AppConfig:
    data = gpu_config().model_dump(mode="json")
    data["http"].update(http)
    return parse_config(data)


def render(config: AppConfig | None = None, **kwargs: Any) -> dict:
    kwargs.setdefault("model_storage", PVC)
    return render_rayservice(config or gpu_config(), name="llmserve", image="llmserve:test", **kwargs)


def head(rs: dict) -> dict:
    return rs["spec"]["rayClusterConfig"]["headGroupSpec"]


def worker(rs: dict) -> dict:
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return group


def llm_replica(rs: dict) -> dict:
    (app,) = serve_doc(rs)["applications"]
    return next(d for d in app["deployments"] if d["name"] == "LLMReplica")


# ---------------------------------------------------------------- the schema and the validator

@pytest.mark.skipif(not SHARED_CRD.exists(), reason="the KubeRay CRD is not on this machine")
def test_schema_fixture_is_the_crds_v1_schema():
    crd_doc = yaml.safe_load(SHARED_CRD.read_text())
    (v1,) = [v for v in crd_doc["spec"]["versions"] if v["name"] == "v1"]
    assert json.loads(SCHEMA_FILE.read_text()) == v1["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("breakage, expected", [
    (lambda rs: worker(rs)["template"]["spec"].update(nodeselector={}), "nodeselector"),
    (lambda rs: worker(rs).update(minReplicas="2"), "minReplicas"),
    (lambda rs: worker(rs).pop("groupName"), "groupName"),
    (lambda rs: head(rs)["template"]["spec"]["containers"][0]["ports"].append(
        {"containerPort": 8000, "name": "again"}), "duplicate list-map key"),
    (lambda rs: rs["spec"].update(serveConfigV2={"applications": []}), "serveConfigV2"),
])
def test_crd_validator_rejects_broken_documents(crd, breakage, expected):
    rayservice = render()
    assert crd_errors(crd, rayservice) == []
    breakage(rayservice)
    assert any(expected in error for error in crd_errors(crd, rayservice))


# ---------------------------------------------------------------- the committed manifests

@pytest.mark.parametrize("layout", ["base", "overlays/gpu-prod", "overlays/dev-cpu"])
def test_committed_manifests_validate_against_crd_and_serve_schema(crd, layout):
    docs = {d["kind"]: d for d in kustomize(MANIFESTS / layout)}
    gpu = layout != "overlays/dev-cpu"  # the GPU config names a compile cache directory; dev-cpu does not
    assert sorted(docs) == (["PersistentVolumeClaim", "RayService"] if gpu else ["RayService"])
    service = docs["RayService"]
    assert_valid(crd, service)
    if layout.startswith("overlays/"):
        assert all(d["metadata"]["namespace"] for d in docs.values())
    if gpu:  # the workers mount the very claim the layout creates
        worker_spec = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in worker_spec["volumes"] if "persistentVolumeClaim" in v]
        assert docs["PersistentVolumeClaim"]["metadata"]["name"] in claims


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (built-in kustomize) not installed")
@pytest.mark.parametrize("overlay", ["gpu-prod", "dev-cpu"])
def test_real_kustomize_build_matches_helper_and_validates(crd, overlay):
    built = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
                           capture_output=True, text=True, check=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(built)}  # kubectl orders by kind, the helper by resource
    assert docs == {d["kind"]: d for d in kustomize(MANIFESTS / "overlays" / overlay)}
    assert_valid(crd, docs["RayService"])


def test_committed_manifests_are_rendered_from_committed_configs():
    files = render_all(None, MANIFESTS)
    for rel, text in files.items():
        assert (MANIFESTS / rel).read_text() == text, f"{rel} is stale: llmserve render-manifests --out manifests"
    on_disk = {str(p.relative_to(MANIFESTS)) for d in ("base", "overlays") for p in (MANIFESTS / d).rglob("*")
               if p.is_file()}
    assert on_disk == set(files), "files in manifests/ that the renderer does not produce"


def test_check_flags_a_config_edit_until_re_rendered(tmp_path, capsys):
    out = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, out)
    assert cli_render(None, str(out), None, check=True) == 0
    config = out / "config" / "gpu-prod.yaml"
    config.write_text(config.read_text().replace("max_replicas: 5", "max_replicas: 3"))
    assert cli_render(None, str(out), None, check=True) == 1
    assert "differs:" in capsys.readouterr().err
    assert cli_render(None, str(out), None, check=False) == 0
    assert cli_render(None, str(out), None, check=True) == 0
    assert worker(yaml.safe_load((out / "base" / "rayservice.yaml").read_text()))["maxReplicas"] == 3


def test_rendering_is_deterministic_and_machine_independent():
    first, second = render_all(None, MANIFESTS), render_all(None, MANIFESTS)
    assert first == second
    assert not any(str(Path.home()) in text for text in first.values())


# ---------------------------------------------------------------- serveConfigV2

def test_serve_config_is_the_llmserve_app_with_the_pod_model_path():
    rs = render(gpu_config())
    doc = ServeDeploySchema.model_validate(serve_doc(rs))
    assert (doc.http_options.host, doc.http_options.port) == ("0.0.0.0", 8000)
    (app,) = doc.applications
    assert (app.name, app.route_prefix, app.import_path) == ("llmserve", "/", "serve_app.app:app_builder")
    pod_config = parse_config(app.args["config"])
    assert pod_config.model.path == PVC.mount_path
    original = gpu_config().model_dump(mode="json")
    for section in ("engine", "replicas", "priority_classes", "router", "default_priority"):
        assert app.args["config"][section] == original[section]
    replica = llm_replica(rs)
    assert replica["num_replicas"] == 2 and "autoscaling_config" not in replica
    assert replica["ray_actor_options"]["num_gpus"] == 1


def test_replica_actor_options_are_the_apps_with_the_compile_cache_env():
    """One function builds them for the app and the manifest (a config override replaces the code's
    ray_actor_options whole); the compile caches' directory reaches the replica's environment, and the
    config's own replicas.env wins."""
    from serve_app.replica_options import replica_actor_options

    config = parse_config({"model": {"path": "/m"}, "engine": {"compile_cache_dir": "/compile-cache"},
                           "replicas": {"num_gpus": 1, "env": {"TRITON_CACHE_DIR": "/mine"}}})
    options = llm_replica(render(config))["ray_actor_options"]
    assert options == replica_actor_options(config)
    assert options["runtime_env"]["env_vars"] == {"VLLM_CACHE_ROOT": "/compile-cache/vllm",
                                                  "FLASHINFER_WORKSPACE_BASE": "/compile-cache/flashinfer",
                                                  "TRITON_CACHE_DIR": "/mine", "LLMSERVE_ENGINE_FORKSERVER": "1"}
    cpu = parse_config({"model": {"path": "/m"}, "replicas": {"num_gpus": 0, "num_cpus": 2,
                                                             "engine_process_start": "spawn"}})
    assert replica_actor_options(cpu)["runtime_env"]["env_vars"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_http_port_drives_serve_container_port_and_probe(crd):
    config = parse_config({**gpu_config().model_dump(mode="json"), "http": {"port": 8080}})
    rs = render(config)
    assert serve_doc(rs)["http_options"]["port"] == 8080
    assert {"containerPort": 8080, "name": "serve"} in head(rs)["template"]["spec"]["containers"][0]["ports"]
    assert worker(rs)["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == 8080
    assert_valid(crd, rs)


# ---------------------------------------------------------------- cluster shape

def test_head_has_no_gpu_and_no_cpu_for_tasks():
    spec = head(render())
    (container,) = spec["template"]["spec"]["containers"]
    assert spec["rayStartParams"]["num-cpus"] == "0" and "num-gpus" not in spec["rayStartParams"]
    for amounts in container["resources"].values():
        assert set(amounts) == {"cpu", "memory"}
    assert "nodeSelector" not in spec["template"]["spec"] and "tolerations" not in spec["template"]["spec"]


def test_gpu_worker_requests_gpus_and_targets_gpu_nodes():
    group = worker(render(gpu_config(num_gpus=2)))
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert group["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    shm = next(v for v in group["template"]["spec"]["volumes"] if v["name"] == "shared-mem")
    assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]


def test_dev_cpu_overlay_has_no_gpu_anywhere():
    text = (MANIFESTS / "overlays" / "dev-cpu" / "rayservice.yaml").read_text()
    rs = yaml.safe_load(text)
    assert "nvidia.com/gpu" not in text
    assert llm_replica(rs)["ray_actor_options"]["num_gpus"] == 0
    assert (worker(rs)["minReplicas"], worker(rs)["maxReplicas"]) == (1, 1)
    assert serve_doc(rs)["applications"][0]["args"]["config"]["model"]["path"] is None


@pytest.mark.parametrize("num_gpus, gpus_per_worker, autoscaling, workers", [
    (1, None, {"min_replicas": 1, "max_replicas": 4}, (1, 1, 4)),
    (2, None, {"min_replicas": 2, "initial_replicas": 3, "max_replicas": 3}, (3, 2, 3)),
    (0.5, 1, {"min_replicas": 1, "max_replicas": 5}, (1, 1, 3)),
    (1, 4, {"min_replicas": 0, "max_replicas": 8, "target_ongoing_requests": 64}, (0, 0, 2)),
])
def test_worker_group_bounds_follow_serve_autoscaling(crd, num_gpus, gpus_per_worker, autoscaling, workers):
    rs = render(gpu_config(num_gpus=num_gpus), autoscaling=autoscaling,
                cluster=ClusterSettings(gpus_per_worker=gpus_per_worker))
    group = worker(rs)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == workers
    replica = llm_replica(rs)
    assert replica["autoscaling_config"] == autoscaling and "num_replicas" not in replica
    gpus = group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert group["maxReplicas"] * gpus >= autoscaling["max_replicas"] * num_gpus
    assert_valid(crd, rs)


def test_fixed_replicas_pin_the_worker_group():
    group = worker(render(gpu_config(num_replicas=3)))
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (3, 3, 3)


def test_readiness_probe_is_the_serve_health_route_on_workers_only():
    """KubeRay deploys serveConfigV2 only after the head Pod is Ready: a head probe on /health would
    wait for an app that is never deployed. The head keeps KubeRay's own GCS/raylet probes."""
    rs = render()
    probe = worker(rs)["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"] == {"path": "/health", "port": 8000}
    assert "readinessProbe" not in head(rs)["template"]["spec"]["containers"][0]


def test_deprecated_unhealthy_thresholds_are_left_out():
    """In the CRD but ignored by KubeRay (ray-project/kuberay#1685): setting them would protect nothing."""
    spec = render()["spec"]
    assert "serviceUnhealthySecondThreshold" not in spec and "deploymentUnhealthySecondThreshold" not in spec


def test_worker_memory_covers_the_weights():
    weights = weight_bytes(ModelShape.from_hf_config(AWQ_7B)).total
    (container,) = worker(render(model_hf_config=AWQ_7B))["template"]["spec"]["containers"]
    expected = math.ceil((weights + 6 * GIB + 8 * GIB + 2 * GIB) / GIB)
    assert container["resources"]["requests"]["memory"] == f"{expected}Gi"
    assert container["resources"]["limits"]["memory"] == f"{expected}Gi"
    (default,) = worker(render())["template"]["spec"]["containers"]
    assert default["resources"]["requests"]["memory"] == "32Gi"
    big = json.loads((FIXTURES / "model_configs" / "llama-2-70b-hf.json").read_text())
    (large,) = worker(render(gpu_config(num_gpus=4), model_hf_config=big))["template"]["spec"]["containers"]
    assert int(large["resources"]["requests"]["memory"][:-2]) * GIB > weight_bytes(ModelShape.from_hf_config(big)).total


def test_committed_base_is_sized_from_the_committed_model_config():
    rs = yaml.safe_load((MANIFESTS / "base" / "rayservice.yaml").read_text())
    expected = render(load_config(MANIFESTS / "config" / "gpu-prod.yaml"), model_hf_config=json.loads(
        (MANIFESTS / "config" / "gpu-prod.model-config.json").read_text()))
    assert worker(rs)["template"]["spec"]["containers"][0]["resources"] == \
        worker(expected)["template"]["spec"]["containers"][0]["resources"]


# ---------------------------------------------------------------- model storage

@pytest.mark.parametrize("storage", [
    PVC,
    ModelStorage(kind="object_store", uri="s3://bucket/llama-2-7b-awq/", mount_path="/models/llama",
                 endpoint_url="http://minio:9000", credentials_secret="s3-creds"),
])
def test_model_storage_kinds_render_and_validate(crd, storage):
    rs = render(model_storage=storage, model_hf_config=AWQ_7B)
    assert_valid(crd, rs)
    assert serve_doc(rs)["applications"][0]["args"]["config"]["model"]["path"] == "/models/llama"
    assert_head_reads_no_model(rs)
    for group in (worker(rs),):
        pod = group["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "model")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model")
        assert mount["mountPath"] == "/models/llama" and mount["readOnly"] is True
        if storage.kind == "pvc":
            assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
            assert mount["subPath"] == "llama" and "initContainers" not in pod
        else:
            assert "emptyDir" in volume
            (init,) = pod["initContainers"]
            assert init["command"][:4] == ["aws", "s3", "cp", "--recursive"]
            assert init["command"][-2:] == ["s3://bucket/llama-2-7b-awq/", "/models/llama"]
            assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def assert_head_reads_no_model(rs: dict) -> None:
    """Requests are tokenized on the replicas (by vLLM): the head's deployments read no model file."""
    pod = head(rs)["template"]["spec"]
    assert "initContainers" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["shared-mem"]


def test_synthetic_storage_generates_the_model_in_every_worker(crd):
    config = parse_config({"replicas": {"num_gpus": 0}})
    rs = render(config, model_storage=ModelStorage(kind="synthetic", mount_path="/models"),
                cluster=ClusterSettings(accelerator="cpu"))
    assert_valid(crd, rs)
    model = serve_doc(rs)["applications"][0]["args"]["config"]["model"]
    assert parse_config({"model": model}).model.resolved_path() == Path("/models/tiny")
    assert_head_reads_no_model(rs)
    (init,) = worker(rs)["template"]["spec"]["initContainers"]
    assert init["command"][:5] == ["llmserve", "make-model", "tiny", "--out", "/models/tiny"]


# ---------------------------------------------------------------- errors

CPU = ClusterSettings(accelerator="cpu")


@pytest.mark.parametrize("kwargs, message", [
    ({"config": gpu_config(num_gpus=0)}, "replicas.num_gpus is 0 but the GPU profile needs GPUs"),
    ({"config": gpu_config(num_gpus=1), "cluster": CPU}, "cpu profile has no GPUs"),
    ({"config": gpu_config(num_gpus=2), "cluster": ClusterSettings(gpus_per_worker=1)}, "does not fit a worker"),
    ({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}, "min_replicas (5) > autoscaling.max_replicas (2)"),
    ({"autoscaling": {"min_replicas": 1}}, "max_replicas is required"),
    ({"autoscaling": {"max_replicas": 4, "max_replica": 8}}, "keys Ray Serve does not know: ['max_replica']"),
    ({"autoscaling": {"min_replicas": 1, "max_replicas": 2, "initial_replicas": 3}}, "initial_replicas (3)"),
    ({"autoscaling": {"max_replicas": 4, "target_ongoing_requests": -1}}, "autoscaling rejected by Ray Serve"),
    ({"autoscaling": [1, 4]}, "autoscaling must be a mapping"),
    ({"name": "LLM_serve"}, "name 'LLM_serve' must be a DNS-1123 label"),
    ({"image": ""}, "image '' must be"),
    ({"cluster": ClusterSettings(worker_shm="8GB")}, "memory quantity '8GB'"),
    ({"model_storage": ModelStorage(kind="synthetic")}, "model storage 'synthetic' generates the model"),
    ({"config": gpu_config_with_http(front="proxy", delivery="push", direct_ingress_port=30000)}, "direct_ingress_port is for `llmserve run`"),
    ({"config": parse_config({"replicas": {"num_gpus": 1}})}, "model.path is empty"),
])
def test_broken_inputs_raise_a_clear_manifest_error(kwargs, message):
    args = {"config": gpu_config(), "name": "llmserve", "image": "llmserve:test", "model_storage": PVC, **kwargs}
    config = args.pop("config")
    with pytest.raises(ManifestError) as info:
        render_rayservice(config, **args)
    assert message in str(info.value)


def test_cli_reports_a_broken_config_without_writing(tmp_path, capsys):
    out = tmp_path / "manifests"
    (out / "config").mkdir(parents=True)
    (out / "config" / "gpu-prod.yaml").write_text("model: {path: /models/x}\nreplicas: {num_gpus: 0}\n")
    assert cli_render(None, str(out), None, check=False) == 2
    assert "num_gpus is 0" in capsys.readouterr().err
    assert not (out / "base").exists()


def test_cli_renders_serve_autoscaling_from_a_result_file(tmp_path, crd):
    out = tmp_path / "manifests"
    shutil.copytree(MANIFESTS / "config", out / "config")
    # A result file is the other source of autoscaling: only for a config without its own section.
    config = out / "config" / "gpu-prod.yaml"
    data = yaml.safe_load(config.read_text())
    data.pop("autoscaling", None)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"autoscaling_config": {"min_replicas": 1, "max_replicas": 6}, "score": 0.9}))
    assert load_autoscaling(result) == {"min_replicas": 1, "max_replicas": 6}
    assert cli_render(None, str(out), str(result), check=False) == 0
    rs = kustomize(out / "overlays" / "gpu-prod")[0]
    assert (worker(rs)["minReplicas"], worker(rs)["maxReplicas"]) == (1, 6)
    assert llm_replica(rs)["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 6}
    assert_valid(crd, rs)
    result.write_text(json.dumps({"score": 0.9}))
    assert cli_render(None, str(out), str(result), check=False) == 2


def test_render_does_not_mutate_its_inputs():
    autoscaling = {"min_replicas": 1, "max_replicas": 3}
    cluster = ClusterSettings()
    before = (copy.deepcopy(autoscaling), cluster.model_dump())
    render(autoscaling=autoscaling, cluster=cluster)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0][
        "template"]["spec"]["tolerations"].append({"key": "x"})
    assert (autoscaling, cluster.model_dump()) == before


# ---------------------------------------------------------------- autoscaling from the config's section

def autoscaling_config(**section: Any) -> AppConfig:
    data = gpu_config().model_dump(mode="json")
    data["autoscaling"] = {"enabled": True, "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 24,
                           "upscale_delay_s": 15, "downscale_delay_s": 400, **section}
    return parse_config(data)


@pytest.mark.parametrize("policy", ["default", "llm"])
def test_config_autoscaling_section_drives_serve_and_the_worker_group(crd, policy):
    config = autoscaling_config(policy=policy)
    rs = render(config)
    assert_valid(crd, rs)
    replica = llm_replica(rs)
    assert "num_replicas" not in replica
    serve_autoscaling = replica["autoscaling_config"]
    assert (serve_autoscaling["min_replicas"], serve_autoscaling["max_replicas"]) == (1, 4)
    assert serve_autoscaling["target_ongoing_requests"] == 24
    assert (worker(rs)["minReplicas"], worker(rs)["maxReplicas"]) == (1, 4)
    # The app builds from the same section: the pods' config carries it unchanged.
    assert serve_doc(rs)["applications"][0]["args"]["config"]["autoscaling"] == config.autoscaling.model_dump(
        mode="json")
    if policy == "default":
        assert "policy" not in serve_autoscaling
        assert (serve_autoscaling["upscale_delay_s"], serve_autoscaling["downscale_delay_s"]) == (15, 400)
    else:
        # The llm policy keeps its own delays; Serve's would wait a second time.
        assert (serve_autoscaling["upscale_delay_s"], serve_autoscaling["downscale_delay_s"]) == (0, 0)
        policy_doc = serve_autoscaling["policy"]
        assert policy_doc["policy_function"] == "autoscaling.ray_policy:LLMAutoscalingPolicy"
        kwargs = policy_doc["policy_kwargs"]
        assert (kwargs["upscale_delay_s"], kwargs["downscale_delay_s"]) == (15, 400)
        assert kwargs["top_classes"] == [config.priority_classes[0].name]
        from autoscaling.ray_policy import LLMAutoscalingPolicy
        assert LLMAutoscalingPolicy(**kwargs).settings.max_replicas == 4


def test_autoscaling_from_the_config_and_from_a_file_at_once_is_refused():
    with pytest.raises(ManifestError, match="set both in the config"):
        render(autoscaling_config(), autoscaling={"min_replicas": 1, "max_replicas": 2})


def test_autoscaling_section_rejects_nonsense():
    from serve_app.config import ConfigError

    with pytest.raises(ConfigError, match="min_replicas"):
        autoscaling_config(min_replicas=5, max_replicas=2)
    with pytest.raises(ConfigError, match="top_classes"):
        autoscaling_config(llm={"top_classes": ["gold"]})


def test_the_haproxy_front_renders_haproxy_mode_into_every_pod_and_delivery_by_pull_into_the_app():
    rs = render(gpu_config_with_http(front="haproxy", delivery="pull"))
    for template in (head(rs)["template"], worker(rs)["template"]):
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    http = app["args"]["config"]["http"]
    assert (http["front"], http["delivery"]) == ("haproxy", "pull")
