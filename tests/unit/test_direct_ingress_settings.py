import pytest

from serve_app.config import ConfigError, parse_config
from serve_app.local import direct_ingress_env


def test_direct_ingress_env_gives_ray_serve_a_port_range_from_the_configured_port():
    assert direct_ingress_env(30000) == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                                         "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30000",
                                         "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "30099"}


def test_direct_ingress_is_off_unless_configured_and_the_port_must_leave_room_for_the_range():
    assert parse_config({}).http.direct_ingress_port is None
    assert parse_config({"http": {"direct_ingress_port": 30000}}).http.direct_ingress_port == 30000
    with pytest.raises(ConfigError, match="direct_ingress_port"):
        parse_config({"http": {"direct_ingress_port": 65500}})
