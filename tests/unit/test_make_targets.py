"""The README's two commands on a fresh machine say what they are doing and for how long."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}:", line))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def test_make_test_shows_progress_per_file_and_the_slowest_tests():
    pytest_line = next(line for line in recipe("test") if "pytest" in line)
    assert re.search(r"--durations=\d+", pytest_line)
    assert not re.search(r"(^|\s)-q(\s|$)", pytest_line)  # -q prints nothing readable for many minutes
    assert any("minutes" in line for line in recipe("test") if line.startswith("@echo"))


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_install_announces_each_step_with_its_duration_and_lets_pip_show_progress():
    script = (ROOT / "scripts" / "install.sh").read_text()
    steps = re.findall(r'^step \d+ "(.*)"$', script, flags=re.M)
    assert len(steps) == 4 and all(re.search(r"\(.*(seconds|\d+ s|minutes?)", s) for s in steps), steps
    project_install = next(line for line in script.splitlines() if "pip\" install" in line and "-e" in line)
    assert " -q " not in project_install


def test_llmserve_run_says_how_long_starting_takes():
    from serve_app.cli import STARTING_NOTE

    assert re.search(r"about \d+ minutes", STARTING_NOTE)
