"""`llmserve run` stops on INT and TERM, also when started in the background with SIGINT ignored."""
import signal
import subprocess
import sys
import time

import pytest

WAITS_FOR_A_SIGNAL = """
import time
from serve_app.cli import stop_on_signals
stop_on_signals()
try:  # "ready" inside: the signal may come as soon as the line is out, before the next statement
    print("ready", flush=True)
    time.sleep(30)
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_background_run_stops_on_the_signal(sent):
    # What a non-interactive shell does to a background job: SIGINT ignored from the start.
    child = subprocess.Popen([sys.executable, "-c", WAITS_FOR_A_SIGNAL], stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert child.stdout.readline().strip() == "ready"
        sent_at = time.monotonic()
        child.send_signal(sent)
        output, _ = child.communicate(timeout=10)
        assert output.strip() == "stopped"
        assert time.monotonic() - sent_at < 5
    finally:
        child.kill()
