"""No prompt, completion or API key text in any log of any process (ingress, router, replicas, vLLM's
engine core, Ray Serve's proxy and controller): requests carry unique markers, then every file under
Ray's session log directory is scanned for them."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def _logs_dirs() -> list[Path]:
    try:
        import ray

        return [Path(ray._private.worker.global_worker.node.get_logs_dir_path())]
    except Exception:  # the app was started by another process (LLMSERVE_TEST_URL): any session may be its
        return sorted(Path("/tmp/ray").glob("session_2*/logs"))


def _found_in_logs(logs_dirs: list[Path], needles: dict[str, str]) -> dict[str, list[str]]:
    """For each named needle, the log files that contain it."""
    encoded = {name: needle.encode() for name, needle in needles.items()}
    hits: dict[str, list[str]] = {name: [] for name in needles}
    for path in (p for logs in logs_dirs for p in logs.rglob("*")):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for name, needle in encoded.items():
            if needle in data:
                hits[name].append(str(path))
    return hits


def test_no_request_text_or_key_in_logs(base_url, model_name):
    run = uuid.uuid4().hex[:12]
    secret = {
        "completion prompt": f"promptmarker{run}",
        "chat message": f"chatmarker{run}",
        "system message": f"systemmarker{run}",
        "stop string": f"stopmarker{run}",
        "rejected prompt": f"rejectedmarker{run}",
        "unknown api key": f"sk-unknownkey{run}",
    }
    # Ray Serve takes x-request-id as the request's id and puts it in its log lines: the positive control
    # that the scan reads the very logs these requests wrote.
    control = f"controlid{run}"
    texts: list[str] = []
    with httpx.Client(base_url=base_url, timeout=120) as http:
        def post(path: str, body: dict, key: str = "key-gold", n: int = 0) -> httpx.Response:
            return http.post(path, json=body, headers={"authorization": f"Bearer {key}",
                                                       "x-request-id": f"{control}-{path.strip('/')}-{n}"})

        reply = post("/v1/completions", {"model": model_name, "prompt": f"t10 {secret['completion prompt']} t11",
                                         "max_tokens": 24, "ignore_eos": True, "stop": [secret["stop string"]]})
        assert reply.status_code == 200, reply.text
        texts.append(reply.json()["choices"][0]["text"])
        chat = {"model": model_name, "max_tokens": 24, "ignore_eos": True,
                "messages": [{"role": "system", "content": secret["system message"]},
                             {"role": "user", "content": f"t12 {secret['chat message']}"}]}
        reply = post("/v1/chat/completions", chat, n=1)
        assert reply.status_code == 200, reply.text
        texts.append(reply.json()["choices"][0]["message"]["content"])
        streamed = post("/v1/chat/completions", {**chat, "stream": True}, n=2)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        refused = post("/v1/completions", {"model": model_name, "prompt": secret["rejected prompt"],
                                           "max_tokens": 0}, n=3)
        assert refused.status_code == 400
        unknown = post("/v1/completions", {"model": model_name, "prompt": "t10"}, key=secret["unknown api key"], n=4)
        assert unknown.status_code == 401
    # Generated text long enough not to occur by chance (random tokens of the synthetic model).
    generated = {f"completion {i}": text.strip() for i, text in enumerate(texts) if len(text.strip()) >= 16}
    assert generated, f"no completion long enough to search for: {texts!r}"
    needles = {**secret, **generated, "key prefix": secret["unknown api key"][:16], "control": control}

    logs = _logs_dirs()
    deadline = time.monotonic() + 30
    hits = _found_in_logs(logs, needles)
    while not hits["control"] and time.monotonic() < deadline:  # log files are written asynchronously
        time.sleep(1)
        hits = _found_in_logs(logs, needles)

    assert hits["control"], f"the request ids never showed up under {logs}: the scan reads the wrong logs"
    leaks = {name: files for name, files in hits.items() if files and name != "control"}
    assert not leaks, f"request text or key found in logs: {leaks}"


def test_the_controllers_routine_calls_write_no_access_log_lines(base_url):
    """Leases (twice a second per ingress replica) and load reports (every 2 s per replica) are the
    controller's routine: one log line each would be most of an idle service's log."""
    httpx.get(f"{base_url}/health", timeout=30)
    time.sleep(3)  # several lease refreshes and a load report, in every app of this session
    hits = _found_in_logs(_logs_dirs(), {"lease": "CALL lease_windows", "load report": "CALL report_load"})
    assert hits == {"lease": [], "load report": []}, hits


IDLE_WINDOW_S = 65  # longer than Ray's once-a-minute debug dumps
PROBE_PERIOD_S = 5  # a Kubernetes-like readiness probe
# Each probe's own access line (~12 a minute) and a few stray lines. Before: ~1,400 lines a minute of
# Ray's debug dumps (event-loop stats of every process, the autoscaler's status every 5 s), and a
# `CALL ping OK` line in the LLM replica's log beside each probe's `GET /health`.
MAX_IDLE_LINES_PER_MINUTE = 60


def _line_counts(logs_dirs: list[Path]) -> dict[Path, int]:
    counts = {}
    for path in (p for logs in logs_dirs for p in logs.rglob("*")):
        try:
            if path.is_file():
                counts[path] = path.read_bytes().count(b"\n")
        except OSError:
            continue
    return counts


def test_an_idle_service_probed_for_health_writes_few_log_lines(base_url):
    logs = _logs_dirs()
    httpx.get(f"{base_url}/health", timeout=30)
    time.sleep(3)
    before = _line_counts(logs)
    started = time.monotonic()
    while time.monotonic() - started < IDLE_WINDOW_S:
        assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
        time.sleep(PROBE_PERIOD_S)
    elapsed = time.monotonic() - started
    time.sleep(3)  # log files are written asynchronously
    grown = {str(path): n - before.get(path, 0) for path, n in _line_counts(logs).items() if n > before.get(path, 0)}
    per_minute = sum(grown.values()) * 60 / elapsed
    print(f"idle service: {per_minute:.0f} log lines a minute; by file: {grown}")
    assert per_minute <= MAX_IDLE_LINES_PER_MINUTE, sorted(grown.items(), key=lambda kv: -kv[1])[:8]
    assert _found_in_logs(logs, {"ping": "CALL ping OK"}) == {"ping": []}
