"""Several `vllm bench serve` processes against one server at the same time, each bounded in time.

All start at once, or a lead process first and the others once its arrivals have begun (its log
says so). Either way a bench spends its first ~30 s importing vLLM and making prompts, so what a
class met is read from the per-request start times (result_summaries.ttft_by_flood_phase). A process
past its deadline is killed and marked timed out: that is how a hang shows in the results.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from autoscaling.bench.host import log
from autoscaling.bench.servers import stop_server
from autoscaling.bench.vllm_bench import start_bench

# What `vllm bench serve` prints as its arrivals begin (older versions: "Initial test run
# completed. Starting main benchmark run...").
ARRIVALS_STARTED = ("Starting main benchmark run", "Traffic request rate")
POLL_S = 0.2


@dataclass
class BenchProcess:
    command: list[str]
    log_path: Path
    process: subprocess.Popen
    started_s: float  # after the lead process started
    deadline_s: float
    ended_s: float | None = None
    timed_out: bool = False

    def finished_cleanly(self) -> bool:
        return not self.timed_out and self.process.returncode == 0

    def info(self) -> dict:
        info = {"returncode": self.process.returncode, "timed_out": self.timed_out,
                "started_after_lead_s": round(self.started_s, 2),
                "wall_s": None if self.ended_s is None else round(self.ended_s - self.started_s, 2)}
        if not self.finished_cleanly():
            info["log_tail"] = self.log_path.read_text()[-3000:]
        return info


def run_concurrently(commands: dict[str, list[str]], log_dir: Path, lead: str | None,
                     timeout_s: float) -> dict[str, BenchProcess]:
    """Run the benches (name -> command) together; each gets `timeout_s` from its own start.
    With `lead`, the others start once its arrivals began; without, all start at once."""
    origin = time.monotonic()

    def launch(name: str) -> BenchProcess:
        log_path = log_dir / f"{Path(_result_name(commands[name])).stem}.log"
        started = time.monotonic() - origin
        return BenchProcess(commands[name], log_path, start_bench(commands[name], log_path), started,
                            started + timeout_s)

    running = {}
    if lead is not None:
        running[lead] = launch(lead)
        waited = wait_for_arrivals(running[lead], timeout_s=min(60.0, timeout_s))
        log(f"{lead} arrivals {'began' if waited else 'not seen in its log'} after "
            f"{time.monotonic() - origin:.1f}s; starting {[n for n in commands if n != lead]}")
    running.update({name: launch(name) for name in commands if name != lead})
    while any(p.ended_s is None for p in running.values()):
        now = time.monotonic() - origin
        for name, bench in running.items():
            if bench.ended_s is not None:
                continue
            if bench.process.poll() is not None:
                bench.ended_s = now
                log(f"bench {name} ended with {bench.process.returncode} after {now - bench.started_s:.1f}s")
            elif now > bench.deadline_s:
                stop_server(bench.process, grace_s=5)
                bench.ended_s, bench.timed_out = now, True
                log(f"bench {name} still running {timeout_s:.0f}s after its start: killed (hung)")
        time.sleep(POLL_S)
    return running


def wait_for_arrivals(bench: BenchProcess, timeout_s: float) -> bool:
    """True once the bench's log shows its arrivals began; False if it exited or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and bench.process.poll() is None:
        text = bench.log_path.read_text() if bench.log_path.exists() else ""
        if any(marker in text for marker in ARRIVALS_STARTED):
            return True
        time.sleep(POLL_S)
    return False


def _result_name(command: list[str]) -> str:
    return command[command.index("--result-filename") + 1]
