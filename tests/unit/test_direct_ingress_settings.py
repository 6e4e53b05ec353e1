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


def test_kuberay_pods_carry_the_ray_serve_env():
    from pathlib import Path

    import yaml

    rayservice = yaml.safe_load((Path(__file__).parents[2] / "manifests" / "base" / "rayservice.yaml").read_text())
    cluster = rayservice["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
