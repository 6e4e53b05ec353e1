"""`llmserve`: run the service, make synthetic checkpoints, plan memory, render manifests.

Other packages add subcommands through the entry-point group `llmserve.commands` (`autoscale` comes
from `autoscaling`): serve_app imports none of them, so they may depend on serve_app without a cycle.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from importlib.metadata import EntryPoint, entry_points
from typing import Iterable

from serve_app.config import ConfigError, load_config

COMMANDS_GROUP = "llmserve.commands"


STARTING_NOTE = (
    "llmserve: starting local Ray, Ray Serve and the vLLM engine: about 2 minutes on CPU (the first run also "
    "writes the synthetic model), several on a GPU. Expected and harmless meanwhile: vLLM's CPU build warns "
    "about Triton and LD_PRELOAD, Ray about token authentication, and at stop vLLM 'force killing' its engine.")


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """TERM (a benchmark harness, a pod) and INT both become KeyboardInterrupt. INT explicitly: a process
    started in the background by a non-interactive shell (`setsid llmserve run &`) inherits SIGINT ignored,
    and Python then installs no handler of its own, so Ctrl-C or `kill -INT` would do nothing."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _cmd_run(args: argparse.Namespace) -> int:
    from serve_app.local import start_local, stop_local

    config = load_config(args.config)
    # Either signal, also while starting: the local Ray cluster goes down with us, not left holding the GPU
    # for the next server.
    stop_on_signals()
    print(STARTING_NOTE, flush=True)
    try:
        base_url = start_local(config)
        stop_on_signals()  # ray.init installed its own, which crashes the driver
        print(f"llmserve: serving {config.model.served_name!r} at {base_url}/v1", flush=True)
        if args.sample:
            _send_sample(base_url, config.model.served_name)
        while not args.exit_after_sample:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_local()
    return 0


def _send_sample(base_url: str, model: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    reply = client.chat.completions.create(model=model, max_tokens=16,
                                           messages=[{"role": "user", "content": "t10 t11 t12"}])
    print("sample request -> ", json.dumps(reply.model_dump(), indent=2), flush=True)


def _cmd_make_model(args: argparse.Namespace) -> int:
    from serve_app.synthetic_model import make_model

    path = make_model(args.shape, args.out, seed=args.seed)
    print(f"wrote synthetic {args.shape} AWQ checkpoint to {path}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serve_app.memory import ModelShape, engine_args_for, get_preset, gpu_memory_bytes, plan_memory, render_plan
    from serve_app.synthetic_model import SHAPES, hf_config

    if args.model in SHAPES:
        hf = hf_config(SHAPES[args.model])
    else:
        config_path = Path(args.model) / "config.json"
        if not config_path.exists():
            print(f"llmserve plan: {args.model!r} is neither a known shape {sorted(SHAPES)} nor a model directory "
                  f"with a config.json", file=sys.stderr)
            return 2
        hf = json.loads(config_path.read_text())
    budget = plan_memory(ModelShape.from_hf_config(hf), gpu_memory_bytes(args.gpu), args.gpu_memory_utilization,
                         args.max_model_len, args.max_num_batched_tokens, kv_cache_dtype=args.kv_cache_dtype)
    preset = get_preset(args.preset)
    from serve_app.policy.batch_controller import preset_within_context

    from serve_app.config import ADAPTIVE_POLICIES, KV_SIZING_BY_POLICY
    from serve_app.memory.plan_table import max_num_seqs_ceiling

    fitted = preset_within_context(preset, args.max_model_len)
    engine_args = engine_args_for(budget, fitted, KV_SIZING_BY_POLICY[args.policy])
    first_window_cap = None
    if args.policy in ADAPTIVE_POLICIES:  # the engine at the memory ceiling, the KV figure starts the window cap
        first_window_cap = engine_args["max_num_seqs"]
        engine_args["max_num_seqs"] = max_num_seqs_ceiling(budget, fitted)
    print(render_plan(budget, engine_args))
    if first_window_cap is not None:
        print(f"router's first window cap (KV occupancy): {first_window_cap:,}; then it follows measured KV usage")
    if args.json:
        print(json.dumps({"budget": budget.__dict__, "engine_args": engine_args, "first_window_cap": first_window_cap},
                         indent=2, default=str))
    return 0


def _cmd_hash_key(args: argparse.Namespace) -> int:
    from serve_app.policy.api_keys import hash_api_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("llmserve hash-key: empty key", file=sys.stderr)
        return 2
    print(hash_api_key(key))
    return 0


def _cmd_render_manifests(args: argparse.Namespace) -> int:
    from serve_app.kuberay.kustomize import cli_render

    return cli_render(args.config, args.out, args.autoscaling, args.check)


def add_plugin_commands(commands: argparse._SubParsersAction, plugins: Iterable[EntryPoint]) -> list[str]:
    """Let each plugin's `register(commands)` add its subcommand (setting `func=callable(args) -> int`).

    A plugin that fails to load or register is left out with a one-line warning naming it, so a
    broken optional package never takes `llmserve run` down with it. Returns the names left out.
    """
    failed = []
    for plugin in sorted(plugins, key=lambda p: p.name):
        try:
            plugin.load()(commands)
        except Exception as error:
            failed.append(plugin.name)
            print(f"llmserve: command {plugin.name!r} unavailable: plugin {plugin.value} failed: "
                  f"{type(error).__name__}: {error}", file=sys.stderr)
    return failed


def build_parser(plugins: Iterable[EntryPoint] | None = None) -> argparse.ArgumentParser:
    """The CLI; `plugins` defaults to the installed `llmserve.commands` entry points."""
    parser = argparse.ArgumentParser(prog="llmserve", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start local Ray + the service (embedded default: tiny model on CPU)")
    run.add_argument("--config", help="YAML config; default: the embedded default")
    run.add_argument("--sample", action="store_true", help="send one chat request once the service is up")
    run.add_argument("--exit-after-sample", action="store_true", help="stop after the sample request")
    run.set_defaults(func=_cmd_run)

    make = commands.add_parser("make-model", help="write a synthetic random-weight AWQ checkpoint")
    make.add_argument("shape", help="tiny, llama2-7b, llama3-8b or llama2-7b-draft (a speculative draft for llama2-7b)")
    make.add_argument("--out", required=True, help="output directory")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=_cmd_make_model)
    plan = commands.add_parser("plan", help="memory budget and engine args for a model on a GPU")
    plan.add_argument("model", help="a model directory (config.json) or a known shape: tiny, llama2-7b, llama3-8b")
    plan.add_argument("--gpu", default="H100-80GB", help="GPU name (H100-80GB, H200, A100-40GB, L4, ...) or size (80GiB)")
    plan.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    plan.add_argument("--max-model-len", type=int, default=4096)
    plan.add_argument("--max-num-batched-tokens", type=int, default=8192)
    plan.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"])
    plan.add_argument("--preset", default="mixed", help="interactive, mixed, batch, long-form")
    plan.add_argument("--policy", default="adaptive", choices=["adaptive", "memory_occupancy", "memory_budget"],
                      help="as engine.batch_size_policy: max_num_seqs at the memory ceiling with the router's "
                      "window cap starting at the occupancy figure (the default), by occupancy, or with every "
                      "sequence at p95 lengths")
    plan.add_argument("--json", action="store_true", help="also print the figures as JSON")
    plan.set_defaults(func=_cmd_plan)

    hash_key = commands.add_parser("hash-key", help="print the sha256 digest to put in auth.keys for an API key")
    hash_key.add_argument("key", nargs="?", help="the key; default: read one line from stdin (keeps it out of "
                          "shell history)")
    hash_key.set_defaults(func=_cmd_hash_key)

    render = commands.add_parser("render-manifests", help="render the KubeRay RayService manifests (kustomize layout)")
    render.add_argument("--config", help="the GPU production config (default: <out>/config/gpu-prod.yaml)")
    render.add_argument("--out", default="manifests", help="output folder (default: manifests)")
    render.add_argument("--autoscaling", help="a load-test result or autoscaling_config JSON/YAML to deploy with")
    render.add_argument("--check", action="store_true", help="exit 1 if the committed manifests differ")
    render.set_defaults(func=_cmd_render_manifests)


    add_plugin_commands(commands, entry_points(group=COMMANDS_GROUP) if plugins is None else plugins)
    return parser


def main(argv: list[str] | None = None, plugins: Iterable[EntryPoint] | None = None) -> int:
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a plugin that added its parser, then failed
        parser.error(f"command {args.command!r} is unavailable (see the warning above)")
    try:
        return args.func(args)
    except (ConfigError, ValueError) as error:
        print(f"llmserve: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
