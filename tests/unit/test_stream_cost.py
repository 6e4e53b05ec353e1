import pytest

from autoscaling.bench.stream_cost import cost_per_thousand
from serve_app.engine_processes import cpu_seconds


def test_cpu_seconds_come_from_utime_and_stime_after_a_name_with_spaces(tmp_path):
    fields_after_name = ["S"] + [str(i) for i in range(4, 14)] + ["250", "50"] + ["0"] * 30
    (tmp_path / "1234").mkdir()
    (tmp_path / "1234" / "stat").write_text("1234 (ray::ServeReplica:app:LLM Replica) " + " ".join(fields_after_name))
    assert cpu_seconds(1234, tmp_path, ticks_per_s=100) == pytest.approx(3.0)
    assert cpu_seconds(4321, tmp_path) is None  # gone


def test_cost_per_thousand_events_and_tokens_per_process_read_twice():
    costs = cost_per_thousand({"replica": 10.0, "ingress": 4.0, "gone": 1.0}, {"replica": 12.0, "ingress": 5.0},
                              events=4000, tokens=32000)
    assert costs == {"ingress": {"cpu_s": 1.0, "per_1000_events_s": 0.25, "per_1000_tokens_s": 0.0312},
                     "replica": {"cpu_s": 2.0, "per_1000_events_s": 0.5, "per_1000_tokens_s": 0.0625}}
    assert cost_per_thousand({"a": 1.0}, {"a": 2.0}, events=0, tokens=0)["a"]["per_1000_events_s"] is None
