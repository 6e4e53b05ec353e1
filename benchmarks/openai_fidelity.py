"""GPU check of the OpenAI surface: every case of the differential test (serve_app/fidelity_matrix.py)
sent to our app and to `vllm serve` one at a time, and the answers compared body by body
(serve_app/fidelity.py: ids and timestamps, error wording and stream chunking may differ).

The caller starts both servers on the same checkpoint, served name and engine settings, e.g.

    python -m serve_app.vllm_serve MODEL --served-model-name NAME --port 8001 --dtype float16 \
        --scheduling-policy priority --enable-prefix-caching
    python benchmarks/openai_fidelity.py --ours http://127.0.0.1:8000 --reference http://127.0.0.1:8001 --out DIR

Writes DIR/report.json (per case: statuses and differences) and DIR/summary.json; exits 1 when a
case differs.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from autoscaling.bench.fidelity_summary import fidelity_summary, served_model
from autoscaling.bench.host import gpu_label, log
from serve_app.fidelity import request_matrix, run_matrix


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", required=True, help="base URL of our app")
    parser.add_argument("--reference", required=True, help="base URL of `vllm serve`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="served model name; default: the one the reference lists")
    parser.add_argument("--api-key", help="sent to our app as a bearer token")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per request")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])

    model = args.model or served_model(args.reference)
    cases = request_matrix(model)
    log(f"{len(cases)} cases for model {model!r}: ours {args.ours}, reference {args.reference}")
    our_headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else None
    report = run_matrix(args.ours, args.reference, cases, our_headers=our_headers, timeout_s=args.timeout)
    print(report.format_table(), flush=True)

    summary = fidelity_summary(report, command, gpu_label())
    (args.out / "report.json").write_text(report.to_json())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"{summary['goals'][0]['measured']}; wrote {args.out / 'report.json'} and {args.out / 'summary.json'}")
    return 0 if summary["goals"][0]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
