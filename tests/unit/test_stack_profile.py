from autoscaling.bench.stack_profile import parse_frame, shares

COLLAPSED = """\
Thread.run (threading.py:982);Worker.main_loop (/x/site-packages/ray/_private/worker.py:1069) 60
_run (asyncio/events.py:80);ResponseParts.parts (/repo/serve_app/http/response_parts.py:70);merge_parts (/repo/serve_app/generation.py:40) 30
_run (asyncio/events.py:80);Ingress.deliver (/repo/serve_app/deployments/ingress.py:221);Metric._record (/x/site-packages/ray/util/metrics.py:133) 10
"""


def test_a_frame_is_its_function_and_its_path_under_site_packages():
    assert parse_frame("Metric._record (/x/site-packages/ray/util/metrics.py:133)").label == \
        "Metric._record (ray/util/metrics.py)"
    assert parse_frame("<module>").label == "<module> ()"


def test_shares_split_the_samples_between_our_code_and_the_rest():
    result = shares(COLLAPSED)
    assert result["samples"] == 100
    assert result["share_with_our_code"] == 0.4  # 30 + 10 of 100 have a serve_app frame on the stack
    assert result["top_self"][0] == {"frame": "Worker.main_loop (ray/_private/worker.py)", "share": 0.6}
    ours = {row["frame"]: row["share"] for row in result["our_top_inclusive"]}
    assert ours == {"ResponseParts.parts (/repo/serve_app/http/response_parts.py)": 0.3,
                    "merge_parts (/repo/serve_app/generation.py)": 0.3,
                    "Ingress.deliver (/repo/serve_app/deployments/ingress.py)": 0.1}
    assert shares("")["samples"] == 0
