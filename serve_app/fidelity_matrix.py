"""The requests of the differential test (`serve_app/fidelity.py`): one named case per OpenAI
feature or kind of bad input, small enough to run on the CPU in seconds.

Deterministic by construction: temperature 0 or a fixed `seed`, and every prompt an engine runs under
16 tokens (one KV block on GPUs) so that prefix caching never changes what an engine computes.
Prompts are words of the synthetic checkpoints' tokenizer (`t<id>`, serve_app/synthetic_model.py),
which any tokenizer also accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "tiny-awq"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PROMPT = "t10 t11 t12"
MAX_TOKENS = 8
SAMPLING = {"temperature": 1.0, "top_p": 0.9, "seed": 1234}
# Stop strings found in most outputs of the t<id> vocabulary, cutting a token in the middle.
STOP = ["3", "7"]
OMIT = object()  # a field value that removes the field (for "missing field" cases)
# Names and values the synthetic tokenizer can spell: its JSON words are single characters a-z, digits
# and JSON punctuation (no `_`); enums and booleans keep the answers a few dozen tokens long.
WEATHER_TOOL = {"type": "function", "function": {
    "name": "weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["oslo", "rome"]}},
                   "required": ["city"]}}}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}}}
STRUCTURED_MAX_TOKENS = 64  # room for a whole JSON answer or tool call, one token per character


@dataclass(frozen=True)
class Case:
    """One request: a JSON `body`, or `raw_body` bytes sent as they are (for malformed JSON)."""

    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    raw_body: bytes | None = None

    @property
    def stream(self) -> bool:
        return bool(self.body and self.body.get("stream"))


def _body(defaults: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **fields}
    return {key: value for key, value in merged.items() if value is not OMIT}


def request_matrix(model: str = DEFAULT_MODEL) -> list[Case]:
    """All cases, asking for `model` (the served model name)."""
    base = {"model": model, "max_tokens": MAX_TOKENS, "temperature": 0, "seed": 0}

    def chat(name: str, **fields: Any) -> Case:
        messages = {"messages": [{"role": "user", "content": PROMPT}]}
        return Case(name, "POST", CHAT, _body({**base, **messages}, fields))

    def completion(name: str, **fields: Any) -> Case:
        return Case(name, "POST", COMPLETIONS, _body({**base, "prompt": PROMPT}, fields))

    streamed = {"stream": True}
    with_usage = {"stream": True, "stream_options": {"include_usage": True}}
    return [
        Case("models_list", "GET", "/v1/models"),
        Case("version", "GET", "/version"),
        Case("tokenizer_info", "GET", "/tokenizer_info"),  # 404 unless `enable_tokenizer_info_endpoint`
        Case("response_retrieve_unknown", "GET", "/v1/responses/resp_unknown"),  # vLLM's 404, store on or off
        Case("response_cancel_unknown", "POST", "/v1/responses/resp_unknown/cancel"),
        # Chat completions
        chat("chat_plain"),
        chat("chat_plain_stream", **streamed),
        chat("chat_multi_turn", messages=[
            {"role": "system", "content": "t50"}, {"role": "user", "content": "t10"},
            {"role": "assistant", "content": "t11"}, {"role": "user", "content": "t12"}]),
        chat("chat_logprobs", logprobs=True, top_logprobs=3),
        chat("chat_logprobs_stream", logprobs=True, top_logprobs=3, **streamed),
        chat("chat_max_completion_tokens", max_tokens=OMIT, max_completion_tokens=6),
        chat("chat_stop", stop=STOP, max_tokens=16),
        chat("chat_stop_stream", stop=STOP, max_tokens=16, **streamed),
        chat("chat_logit_bias", logit_bias={"100": 100}),
        chat("chat_penalties", presence_penalty=1.5, frequency_penalty=1.0, max_tokens=16),
        chat("chat_seeded_sampling", **SAMPLING),
        chat("chat_n2", n=2, **SAMPLING),
        chat("chat_n2_stream", n=2, **SAMPLING, **streamed),
        chat("chat_stream_include_usage", **with_usage),
        chat("chat_stream_continuous_usage",
             stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}),
        chat("chat_json_object", response_format={"type": "json_object"}, max_tokens=STRUCTURED_MAX_TOKENS),
        chat("chat_json_schema", response_format=JSON_SCHEMA, max_tokens=STRUCTURED_MAX_TOKENS),
        chat("chat_structured_choice", structured_outputs={"choice": ["t20", "t21"]}),
        chat("chat_tool_named", tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "weather"}},
             max_tokens=STRUCTURED_MAX_TOKENS),
        chat("chat_tool_named_stream", tools=[WEATHER_TOOL], max_tokens=STRUCTURED_MAX_TOKENS,
             tool_choice={"type": "function", "function": {"name": "weather"}}, **streamed),
        chat("chat_tool_required", tools=[WEATHER_TOOL], tool_choice="required", max_tokens=STRUCTURED_MAX_TOKENS),
        chat("chat_tool_none", tools=[WEATHER_TOOL], tool_choice="none"),
        chat("chat_tool_auto", tools=[WEATHER_TOOL], tool_choice="auto"),
        chat("chat_functions_legacy", functions=[WEATHER_TOOL["function"]]),
        # Completions
        completion("completion_plain"),
        completion("completion_plain_stream", **streamed),
        completion("completion_logprobs", logprobs=3),
        completion("completion_logprobs_stream", logprobs=3, **streamed),
        completion("completion_echo", echo=True),
        completion("completion_echo_logprobs", echo=True, logprobs=2),
        completion("completion_best_of", best_of=2),
        completion("completion_suffix", suffix=" t20"),
        completion("completion_stop", stop=STOP, max_tokens=16),
        completion("completion_logit_bias", logit_bias={"100": 100}),
        completion("completion_penalties", presence_penalty=1.5, frequency_penalty=1.0, max_tokens=16),
        completion("completion_seeded_sampling", **SAMPLING),
        completion("completion_n2", n=2, **SAMPLING),
        completion("completion_stream_include_usage", **with_usage),
        completion("completion_token_ids", prompt=[1, 10, 11, 12]),
        completion("completion_prompt_list", prompt=["t10 t11", "t20 t21"]),
        completion("completion_prompt_list_stream", prompt=["t10 t11", "t20 t21"], **streamed),
        # Past the context: vLLM 0.32 shortens max_tokens to what fits (200), it does not refuse.
        completion("completion_max_tokens_past_context", max_tokens=510),
        # Bad input: status, error type, param and code must match
        chat("chat_max_tokens_over_model_len", max_tokens=600),
        chat("chat_prompt_over_context", messages=[{"role": "user", "content": " ".join(["t10"] * 600)}]),
        chat("chat_unknown_model", model="no-such-model"),
        completion("completion_unknown_model", model="no-such-model"),
        chat("chat_temperature_wrong_type", temperature="hot"),
        chat("chat_stream_temperature_wrong_type", temperature="hot", **streamed),
        chat("chat_negative_max_tokens", max_tokens=-1),
        chat("chat_missing_messages", messages=OMIT),
        chat("chat_empty_messages", messages=[]),
        completion("completion_missing_prompt", prompt=OMIT),
        completion("completion_empty_prompt", prompt=""),
        completion("completion_token_id_out_of_vocab", prompt=[1, 10_000_000]),
        Case("chat_invalid_json", "POST", CHAT, raw_body=b'{"model": "' + model.encode() + b'", "messages": ['),
        Case("completion_invalid_json", "POST", COMPLETIONS, raw_body=b"not json"),
        chat("chat_n_zero", n=0),
        completion("completion_n_zero", n=0),
        chat("chat_top_logprobs_over_limit", logprobs=True, top_logprobs=21),
        chat("chat_top_logprobs_without_logprobs", top_logprobs=2),
        completion("completion_logprobs_over_limit", logprobs=21),
        chat("chat_tool_choice_unknown_function", tools=[WEATHER_TOOL],
             tool_choice={"type": "function", "function": {"name": "no_such_tool"}}),
    ]


REQUEST_MATRIX = request_matrix()
