"""Report of a rate sweep: PNG plots and tables, from a saved sweep JSON."""
from __future__ import annotations

import json

import pytest

from autoscaling.loadtest.arrivals import poisson
from autoscaling.loadtest.cli import main
from autoscaling.loadtest.lengths import Fixed
from autoscaling.loadtest.metrics import RequestRecord, Slo
from autoscaling.loadtest.report import PLOTS, runs_of, summary_table, write_report
from autoscaling.loadtest.runner import LoadTestResult
from autoscaling.loadtest.sweep import spec_at_rate, sweep_dict
from autoscaling.loadtest.workload import SpecError, WorkloadSpec, parse_arrival

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_run(rate: float) -> LoadTestResult:
    """Ten requests per second of arrivals; latency grows with the rate; one refusal above 4 req/s."""
    spec = WorkloadSpec(poisson(rate), {"interactive": 0.3, "batch": 0.7}, Fixed(8), Fixed(4), duration_s=10)
    records = []
    for i in range(int(rate * 10)):
        send = (i + 1) / rate  # the last send at 10 s: offered = rate
        name = "interactive" if i % 3 == 0 else "batch"
        if rate > 4 and i == 0:
            records.append(RequestRecord(i, name, send, send + 0.01, "refused", 429))
            continue
        ttft = 0.05 * rate
        tokens = [send + ttft + k * 0.02 * rate for k in range(4)]
        records.append(RequestRecord(i, name, send, tokens[-1], "completed", 200, tokens[0], tokens, 4, 8))
    return LoadTestResult.from_records(records, spec, {"interactive": Slo(0.3, 0.1)}, command="synthetic",
                                       base_url="http://x", model="m")


@pytest.fixture()
def sweep_file(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep_dict([synthetic_run(r) for r in (1, 2, 4, 8)], "synthetic sweep")))
    return path


def test_report_from_saved_sweep_json(sweep_file, tmp_path):
    paths = write_report(json.loads(sweep_file.read_text()), tmp_path / "report")
    assert [p.name for p in paths] == [*PLOTS, "report.md"]
    for png in paths[:3]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    markdown = paths[3].read_text()
    assert all(f"]({name})" in markdown for name in PLOTS)
    assert "interactive TTFT 0.3 s / TPOT 0.1 s" in markdown


def test_report_command(sweep_file, tmp_path, capsys):
    assert main(["report", str(sweep_file), "--out", str(tmp_path / "r")]) == 0
    assert all((tmp_path / "r" / name).exists() for name in PLOTS)


def test_summary_table_has_a_row_per_run_and_class(sweep_file):
    sweep = json.loads(sweep_file.read_text())
    lines = summary_table(sweep).splitlines()
    assert len(lines) == 2 + 4 * 3  # header, rule, (interactive, batch, all) per rate
    row = next(line for line in lines if line.split()[:2] == ["8.00", "(all)"])
    # 80 sent, 79 completed, one 429; TTFT 0.05 * 8 = 400 ms for every request.
    assert row.split()[2:6] == ["80", "79", "1", "0"] and "400/400" in row


def test_runs_of_accepts_one_run_and_rejects_other_json():
    run = synthetic_run(2).to_dict()
    assert runs_of(run) == [run]
    with pytest.raises(ValueError, match="kind"):
        runs_of({"kind": "something"})


def test_sweep_needs_a_single_rate_schedule():
    spec = WorkloadSpec(parse_arrival("gamma:1:cv=2"), {"a": 1}, Fixed(1), Fixed(1), num_requests=5)
    assert spec_at_rate(spec, 7).arrival.to_dict() == {"kind": "gamma", "rate_rps": 7, "cv": 2.0}
    with pytest.raises(SpecError, match="poisson or gamma"):
        spec_at_rate(WorkloadSpec(parse_arrival("ramp:1:2:10"), {"a": 1}, Fixed(1), Fixed(1)), 3)
