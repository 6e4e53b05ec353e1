"""vLLM's own OpenAI server app, bound to this replica's engine and called in-process.

Every OpenAI field (logprobs, structured outputs, tools, n, echo, penalties, ...) is then vLLM's
own code, exactly as `vllm serve` runs it. What is ours is wired in at one point: the engine's
`generate`, which vLLM's serving layer calls once per engine request. There the request's class
rank becomes vLLM's scheduling priority, the operator's token limits are checked, and the tokens
generated are counted for routing, metrics and SLOs.
"""
from __future__ import annotations

import argparse
import contextvars
import dataclasses
import inspect
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineDeadError

try:  # vLLM >= 0.30 moved the server's building blocks; the old paths warn there
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:  # vLLM 0.26 (the GPU host)
    from vllm.entrypoints.openai.api_server import build_app, init_app_state
    from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

from serve_app.openai_api import peek_request


@dataclass
class RequestTally:
    """What the engine did for one of our requests (one HTTP call; `n` > 1 is several engine requests)."""

    priority: int
    prompt_param: str = "prompt"
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    started: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of the prompt, found in the engine's prefix cache
    generated_tokens: int = 0
    first_token_s: float | None = None
    first_token_at: float | None = None  # time.monotonic() of the first token
    engine_submitted_at: float | None = None  # time.monotonic() when vLLM's engine was handed the first request
    # The engine core's (queued, scheduled, first token) for the first token's request, time.monotonic() of
    # the core's process (one clock for every process of a host); None where vLLM reports none.
    engine_core_times: tuple[float, float, float] | None = None
    finish_reasons: list[str] = field(default_factory=list)
    # The engine died under this request (`generate` raised vLLM's dead-engine error). vLLM's app then answers
    # its own error, which the relay replaces with the replica's failure (its health check fails next).
    saw_engine_dead: bool = False
    # vLLM's `AsyncLLM.errored`: its app may refuse a request to a dead engine before `generate` is called.
    engine_errored: Callable[[], bool] = lambda: False
    # (engine request id, choice index) -> tokens counted so far (outputs may repeat the whole sequence)
    _seen: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def engine_dead(self) -> bool:
        return self.saw_engine_dead or self.engine_errored()

    @classmethod
    def for_request(cls, path: str, priority_rank: int, http: Any, body: bytes = b"",
                    engine_errored: Callable[[], bool] = lambda: False) -> RequestTally:
        """A tally for a call to `path` with `body`, with the prompt and output limits of `http` (`HttpSettings`).
        SageMaker's `/invocations` takes a chat or a completion body: its prompt is named as the body names it."""
        chat = path.endswith(("chat/completions", "/v1/messages")) or (
            path == "/invocations" and peek_request(body).num_messages is not None)
        prompt_param = "messages" if chat else "input" if path.endswith("responses") else "prompt"
        return cls(priority=priority_rank, prompt_param=prompt_param, max_prompt_tokens=http.max_prompt_tokens,
                   max_output_tokens=http.max_output_tokens, engine_errored=engine_errored)

    def observe(self, request_id: str, output: Any, cumulative: bool) -> None:
        if output.prompt_token_ids is not None:
            self.prompt_tokens = max(self.prompt_tokens, len(output.prompt_token_ids))
        self.cached_prompt_tokens = max(self.cached_prompt_tokens, getattr(output, "num_cached_tokens", None) or 0)
        for completion in output.outputs:
            key = (request_id, completion.index)
            count = len(completion.token_ids)
            new = count - self._seen.get(key, 0) if cumulative else count
            self._seen[key] = count if cumulative else self._seen.get(key, 0) + count
            self.generated_tokens += max(new, 0)
            if completion.finish_reason is not None and output.finished:
                self.finish_reasons.append(completion.finish_reason)
        if self.first_token_s is None and self.generated_tokens:
            self.first_token_at = time.monotonic()
            self.first_token_s = self.first_token_at - self.started
            self.engine_core_times = engine_core_times(output)

    @property
    def finish_reason(self) -> str | None:
        """The request's ending when every engine request finished normally, else None."""
        if not self.finish_reasons or "abort" in self.finish_reasons:
            return None
        return self.finish_reasons[-1]


def engine_core_times(output: Any) -> tuple[float, float, float] | None:
    """(queued, scheduled, first token) from the engine core's stats on a `RequestOutput`, if all are set."""
    stats = getattr(output, "metrics", None)
    times = tuple(getattr(stats, name, 0.0) or 0.0 for name in ("queued_ts", "scheduled_ts", "first_token_ts"))
    return times if all(times) else None


CURRENT_TALLY: contextvars.ContextVar[RequestTally | None] = contextvars.ContextVar("llmserve_tally", default=None)


def _prompt_length(prompt: Any) -> int | None:
    ids = getattr(prompt, "prompt_token_ids", None)
    if ids is None and isinstance(prompt, dict):
        ids = prompt.get("prompt_token_ids")
    return None if ids is None else len(ids)


def tap_engine(engine: Any) -> None:
    """Wrap `engine.generate` so each engine request of one of our calls obeys and reports to its tally."""
    generate = engine.generate

    def tapped(prompt, sampling_params, request_id, *args, **kwargs):
        tally = CURRENT_TALLY.get()
        if tally is None:  # a call that is not ours (none today): vLLM's behaviour unchanged
            return generate(prompt, sampling_params, request_id, *args, **kwargs)
        prompt_tokens = _prompt_length(prompt)
        if tally.max_prompt_tokens is not None and prompt_tokens is not None and prompt_tokens > tally.max_prompt_tokens:
            raise VLLMValidationError(f"the prompt is {prompt_tokens} tokens; this server accepts at most "
                                      f"{tally.max_prompt_tokens} (http.max_prompt_tokens)",
                                      parameter=tally.prompt_param, value=prompt_tokens)
        max_tokens = getattr(sampling_params, "max_tokens", None)
        if tally.max_output_tokens is not None and max_tokens is not None and max_tokens > tally.max_output_tokens:
            # A budget named above the cap was refused by the ingress; this is vLLM's default (the rest of
            # the context), which the cap replaces.
            sampling_params.max_tokens = tally.max_output_tokens
        kwargs["priority"] = tally.priority
        if tally.engine_submitted_at is None:
            tally.engine_submitted_at = time.monotonic()
        cumulative = getattr(sampling_params, "output_kind", None) != RequestOutputKind.DELTA

        async def observed():
            try:
                async for output in generate(prompt, sampling_params, request_id, *args, **kwargs):
                    tally.observe(request_id, output, cumulative)
                    yield output
            except EngineDeadError:
                tally.saw_engine_dead = True
                raise
        return observed()

    engine.generate = tapped


def server_namespace(engine_args: AsyncEngineArgs, frontend: dict[str, Any]) -> argparse.Namespace:
    """The arguments `vllm serve` would have parsed: its defaults, then our engine args and the
    config's frontend options (`server.vllm_frontend`, e.g. `tool_call_parser`)."""
    parser = make_arg_parser(FlexibleArgumentParser())
    namespace = parser.parse_args(["--model", engine_args.model])
    values = {f.name: getattr(engine_args, f.name) for f in dataclasses.fields(engine_args)}
    if isinstance(values.get("served_model_name"), str):
        values["served_model_name"] = [values["served_model_name"]]
    for key, value in {**values, **frontend}.items():
        setattr(namespace, key, value)
    return namespace


async def build_server_app(engine: Any, namespace: argparse.Namespace) -> Any:
    """vLLM's FastAPI app with its serving state (chat, completions, models, tokenize, ...) on `engine`."""
    supported_tasks = await engine.get_supported_tasks()
    app = build_app(namespace, supported_tasks=supported_tasks, model_config=engine.model_config)
    kwargs: dict[str, Any] = {}
    if "supported_tasks" in inspect.signature(init_app_state).parameters:
        kwargs["supported_tasks"] = supported_tasks
    await init_app_state(engine, app.state, namespace, **kwargs)
    # vLLM's engine-error handler flips `should_exit` on the uvicorn server `vllm serve` runs;
    # here Ray Serve's health check restarts the replica instead, but the attribute must exist.
    app.state.server = types.SimpleNamespace(should_exit=False)
    return app
