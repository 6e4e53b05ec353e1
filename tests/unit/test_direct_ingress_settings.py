import pytest

from serve_app.config import ConfigError, parse_config
from serve_app.ray_env import direct_ingress_env


def test_direct_ingress_env_gives_ray_serve_a_port_range_from_the_configured_port():
    assert direct_ingress_env(30000) == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                                         "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30000",
                                         "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "30099"}


def test_direct_ingress_is_off_unless_configured_and_the_port_must_leave_room_for_the_range():
    assert parse_config({}).http.direct_ingress_port is None
    assert parse_config({"http": {"direct_ingress_port": 30000}}).http.direct_ingress_port == 30000
    with pytest.raises(ConfigError, match="direct_ingress_port"):
        parse_config({"http": {"direct_ingress_port": 65500}})


def test_ray_serve_env_turns_the_throughput_mode_on_with_its_direct_ingress_off_unless_asked():
    from serve_app.ray_env import ray_serve_env

    default = ray_serve_env(parse_config({}).http)
    assert default["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and default["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    direct = ray_serve_env(parse_config({"http": {"direct_ingress_port": 30000}}).http)
    assert direct["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and direct["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "30000"
    assert ray_serve_env(parse_config({"http": {"ray_serve_throughput_optimized": False}}).http) == {}


@pytest.mark.parametrize("layout, front_env", [
    ("base", {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}),  # gpu-prod: HAProxy
    ("overlays/dev-cpu", {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}),
])
def test_kuberay_pods_carry_the_ray_serve_env(layout, front_env):
    from pathlib import Path

    import yaml

    path = Path(__file__).parents[2] / "manifests" / layout / "rayservice.yaml"
    rayservice = yaml.safe_load(path.read_text())
    cluster = rayservice["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert {name: env.get(name) for name in front_env} == front_env
        if "RAY_SERVE_ENABLE_HA_PROXY" not in front_env:
            assert "RAY_SERVE_ENABLE_HA_PROXY" not in env


def test_the_haproxy_front_needs_delivery_by_pull_and_no_direct_ingress_port():
    with pytest.raises(ConfigError, match="delivery: pull"):
        parse_config({"http": {"front": "haproxy"}})
    with pytest.raises(ConfigError, match="direct_ingress_port"):
        parse_config({"http": {"front": "haproxy", "delivery": "pull", "direct_ingress_port": 30000}})
    http = parse_config({"http": {"front": "haproxy", "delivery": "pull"}}).http
    assert (http.front, http.delivery) == ("haproxy", "pull")
    assert (parse_config({}).http.front, parse_config({}).http.delivery) == ("proxy", "push")


def test_direct_ports_are_a_range_for_delivery_direct_alone():
    http = parse_config({"http": {"front": "haproxy", "delivery": "direct", "direct_ports": [31000, 31007]}}).http
    assert tuple(http.direct_ports) == (31000, 31007)
    assert parse_config({"http": {"delivery": "direct"}}).http.direct_ports is None  # the system picks
    with pytest.raises(ConfigError, match="delivery: direct"):
        parse_config({"http": {"delivery": "pull", "direct_ports": [31000, 31007]}})
    for wrong in ([31007, 31000], [80, 90], [65535, 65536]):
        with pytest.raises(ConfigError, match="direct_ports must be"):
            parse_config({"http": {"delivery": "direct", "direct_ports": wrong}})


def test_the_haproxy_front_turns_ray_serves_haproxy_mode_and_its_direct_ingress_on():
    from serve_app.ray_env import ray_serve_env

    env = ray_serve_env(parse_config({"http": {"front": "haproxy", "delivery": "pull"}}).http)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in ray_serve_env(parse_config({"http": {"delivery": "pull"}}).http)


@pytest.mark.parametrize("delivery", ["push", "pull"])
def test_only_delivery_by_pull_builds_under_ray_serves_haproxy_mode(monkeypatch, delivery):
    """HAProxy mode refuses a request router on the ingress deployment; delivery by push needs one."""
    from ray.serve._private import build_app as serve_build_module
    from ray.serve.exceptions import RayServeException

    from serve_app.app import build_app

    monkeypatch.setattr(serve_build_module, "RAY_SERVE_ENABLE_HA_PROXY", True)
    app = build_app(parse_config({"http": {"delivery": delivery}}))
    if delivery == "push":
        with pytest.raises(RayServeException, match="request_router_class"):
            serve_build_module.build_app(app, name="t")
    else:
        built = serve_build_module.build_app(app, name="t")
        assert {d.name for d in built.deployments} == {"Ingress", "LLMReplica", "Controller"}
        # Room beyond the requests' cap for each ingress replica's stream and heartbeat.
        (replica,) = [d for d in built.deployments if d.name == "LLMReplica"]
        assert replica.max_ongoing_requests == parse_config({}).replicas.max_ongoing_requests + 2 + 8
