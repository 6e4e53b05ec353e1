import pytest

from autoscaling.bench.stream_cost import cost_per_thousand, proc_stat_cpu_s


def test_cpu_seconds_come_from_utime_and_stime_after_a_name_with_spaces():
    fields_after_name = ["S"] + [str(i) for i in range(4, 14)] + ["250", "50"] + ["0"] * 30
    line = "1234 (ray::ServeReplica:app:LLM Replica) " + " ".join(fields_after_name)
    assert proc_stat_cpu_s(line) == pytest.approx(3.0)


def test_cost_per_thousand_events_and_tokens_per_process_read_twice():
    costs = cost_per_thousand({"replica": 10.0, "ingress": 4.0, "gone": 1.0}, {"replica": 12.0, "ingress": 5.0},
                              events=4000, tokens=32000)
    assert costs == {"ingress": {"cpu_s": 1.0, "per_1000_events_s": 0.25, "per_1000_tokens_s": 0.0312},
                     "replica": {"cpu_s": 2.0, "per_1000_events_s": 0.5, "per_1000_tokens_s": 0.0625}}
    assert cost_per_thousand({"a": 1.0}, {"a": 2.0}, events=0, tokens=0)["a"]["per_1000_events_s"] is None
