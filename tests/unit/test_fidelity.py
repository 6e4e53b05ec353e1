"""The differential test's normalizer and comparer: what counts as a difference and what does not."""
from __future__ import annotations

import json

import httpx

from serve_app.fidelity import (REQUEST_MATRIX, Case, differences, fold_stream, normalized_reply, parse_sse,
                                reply_differences, run_matrix)

CHAT = "/v1/chat/completions"


def chat_body(content: str = "t1 t2", *, logprob: float = -6.5, request_id: str = "chatcmpl-aaa",
              created: int = 1700000000, finish_reason: str = "length") -> dict:
    return {"id": request_id, "object": "chat.completion", "created": created, "model": "tiny-awq",
            "system_fingerprint": f"vllm-0.32.0-{request_id[-3:]}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": [{"token": "t1", "logprob": logprob}]},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}}


def reply(body, status: int = 200, content_type: str = "application/json", path: str = CHAT):
    text = body if isinstance(body, str) else json.dumps(body)
    return normalized_reply(path, status, content_type, text)


def sse(*events) -> str:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)


def chunk(content=None, *, finish_reason=None, role=None, request_id="chatcmpl-aaa", created=1,
          tool_calls=None, usage=None, choices=True) -> dict:
    delta = {key: value for key, value in (("role", role), ("content", content), ("tool_calls", tool_calls))
             if value is not None}
    event = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": "tiny-awq",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
             if choices else []}
    if usage is not None:
        event["usage"] = usage
    return event


def stream_reply(text: str):
    return reply(text, content_type="text/event-stream; charset=utf-8")


def test_equal_bodies_have_no_differences():
    assert reply_differences(reply(chat_body()), reply(chat_body())) == []


def test_a_different_content_is_reported_with_its_path():
    found = reply_differences(reply(chat_body("t1 t2")), reply(chat_body("t1 t3")))
    assert found == ["body.choices.0.message.content: 't1 t2' != 't1 t3'"]


def test_ids_timestamps_and_fingerprints_are_ignored():
    ours = reply(chat_body(request_id="chatcmpl-aaa", created=1))
    reference = reply(chat_body(request_id="chatcmpl-bbb", created=2))
    assert reply_differences(ours, reference) == []


def test_tool_call_ids_and_request_ids_are_ignored():
    def body(call_id: str, request_id: str) -> dict:
        call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        return {"choices": [{"message": {"tool_calls": [call]}}], "kv_transfer_params": {"request_id": request_id}}

    assert differences(reply(body("chatcmpl-tool-1a", "r1")).body, reply(body("call_2b", "r2")).body) == []


def test_logprobs_within_the_tolerance_match_and_beyond_it_differ():
    assert reply_differences(reply(chat_body(logprob=-6.5)), reply(chat_body(logprob=-6.5004))) == []
    found = reply_differences(reply(chat_body(logprob=-6.5)), reply(chat_body(logprob=-6.51)))
    assert found == ["body.choices.0.logprobs.content.0.logprob: -6.5 != -6.51"]


def test_integers_and_types_compare_exactly():
    assert differences({"n": 8}, {"n": 9}) == ["n: 8 != 9"]
    assert differences({"n": 1}, {"n": True}) == ["n: 1 != True"]
    assert differences({"x": None}, {"x": 0}) == ["x: None != 0"]


def test_missing_and_extra_fields_are_both_reported():
    assert differences({"a": 1, "extra": None}, {"a": 1, "b": 2}) == [
        "b: missing in ours (reference: 2)", "extra: not in reference (ours: None)"]


def test_list_lengths_are_compared():
    assert differences({"choices": [1]}, {"choices": [1, 2]}) == ["choices: 1 items != 2"]


def test_status_and_media_type_must_match():
    found = reply_differences(reply({"ok": 1}, status=200), reply({"ok": 1}, status=201, content_type="text/plain"))
    assert found == ["status: 200 != 201", "content_type: 'application/json' != 'text/plain'"]


def test_errors_compare_type_param_and_code_but_not_the_message():
    def error(message: str, param: str | None = "max_tokens", kind: str = "BadRequestError") -> dict:
        return {"error": {"message": message, "type": kind, "param": param, "code": 400}}

    assert reply_differences(reply(error("too many"), 400), reply(error("max_tokens=600 > 512"), 400)) == []
    assert reply_differences(reply(error("x", param=None), 400), reply(error("x"), 400)) == [
        "body.error.param: None != 'max_tokens'"]
    assert reply_differences(reply(error("x", kind="Bad Request"), 400), reply(error("x"), 400)) == [
        "body.error.type: 'Bad Request' != 'BadRequestError'"]


def test_the_flat_error_shape_also_ignores_its_message():
    def flat(message: str) -> dict:
        return {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}

    assert reply_differences(reply(flat("a"), 400), reply(flat("b"), 400)) == []


def test_model_list_compares_what_clients_read():
    def models(created: int, max_model_len: int = 512) -> dict:
        return {"object": "list", "data": [{
            "id": "tiny-awq", "object": "model", "created": created, "owned_by": "vllm", "root": "/m", "parent": None,
            "max_model_len": max_model_len, "permission": [{"id": f"modelperm-{created}", "created": created}]}]}

    path = "/v1/models"
    assert reply_differences(reply(models(1), path=path), reply(models(2), path=path)) == []
    assert reply_differences(reply(models(1, 512), path=path), reply(models(1, 1024), path=path)) == [
        "body.data.0.max_model_len: 512 != 1024"]


def test_a_non_json_body_compares_as_text():
    assert reply_differences(reply("Internal Server Error", 500, "text/plain"),
                             reply("Internal Server Error", 500, "text/plain")) == []
    assert reply("oops", 500, "text/plain").body == "oops"


def test_parse_sse_keeps_order_done_and_multi_line_data():
    text = 'data: {"a": 1}\n\nevent: x\ndata: {"b":\ndata: 2}\n\ndata: [DONE]\n\n'
    assert parse_sse(text) == ['{"a": 1}', '{"b":\n2}', "[DONE]"]


def test_a_stream_cut_differently_folds_to_the_same_reply():
    usage = {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    per_token = sse(chunk("", role="assistant"), chunk(" t1"), chunk(" t2"), chunk(" t3", finish_reason="length"),
                    chunk(choices=False, usage=usage, request_id="chatcmpl-aaa"), "[DONE]")
    coalesced = sse(chunk(" t1 t2", role="assistant", request_id="chatcmpl-bbb"),
                    chunk(" t3", finish_reason="length", request_id="chatcmpl-bbb"),
                    chunk(choices=False, usage=usage, request_id="chatcmpl-bbb"), "[DONE]")
    assert reply_differences(stream_reply(per_token), stream_reply(coalesced)) == []
    assert stream_reply(per_token).body["choices"][0]["delta"] == {"role": "assistant", "content": " t1 t2 t3"}


def test_a_stream_with_other_text_finish_reason_or_usage_differs():
    usage = lambda n: {"prompt_tokens": 6, "completion_tokens": n, "total_tokens": 6 + n}  # noqa: E731
    reference = stream_reply(sse(chunk(" t1"), chunk(" t2", finish_reason="length"),
                                 chunk(choices=False, usage=usage(2)), "[DONE]"))
    other_text = stream_reply(sse(chunk(" t1 t9", finish_reason="length"), chunk(choices=False, usage=usage(2)),
                                  "[DONE]"))
    assert reply_differences(other_text, reference) == ["body.choices.0.delta.content: ' t1 t9' != ' t1 t2'"]
    other_end = stream_reply(sse(chunk(" t1 t2", finish_reason="stop"), chunk(choices=False, usage=usage(3)),
                                 "[DONE]"))
    assert reply_differences(other_end, reference) == [
        "body.choices.0.finish_reason: 'stop' != 'length'", "body.usage.completion_tokens: 3 != 2",
        "body.usage.total_tokens: 9 != 8"]


def test_a_stream_without_done_differs():
    events = [chunk(" t1", finish_reason="length")]
    assert reply_differences(stream_reply(sse(*events)), stream_reply(sse(*events, "[DONE]"))) == [
        "body.[DONE]: missing in ours (reference: 'last')"]


def test_streamed_tool_call_fragments_are_joined_per_call():
    call = lambda **f: [{"index": 0, **f}]  # noqa: E731
    fragments = sse(chunk(tool_calls=call(id="chatcmpl-tool-1", type="function",
                                          function={"name": "get_weather", "arguments": ""})),
                    chunk(tool_calls=call(function={"arguments": '{"city": '})),
                    chunk(tool_calls=call(function={"arguments": '"Oslo"}'}), finish_reason="tool_calls"), "[DONE]")
    whole = sse(chunk(tool_calls=call(id="call_9", type="function",
                                      function={"name": "get_weather", "arguments": '{"city": "Oslo"}'}),
                      finish_reason="tool_calls"), "[DONE]")
    assert reply_differences(stream_reply(fragments), stream_reply(whole)) == []
    assert stream_reply(fragments).body["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]


def test_completion_stream_logprobs_are_concatenated():
    def event(text: str, offset: int, logprob: float, finish_reason=None) -> dict:
        logprobs = {"text_offset": [offset], "token_logprobs": [logprob], "tokens": [text.strip()],
                    "top_logprobs": [{text.strip(): logprob}]}
        return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}

    folded = fold_stream(parse_sse(sse(event(" t1", 0, -1.0), event(" t2", 3, -2.0, "length"), "[DONE]")))
    assert folded["choices"][0]["text"] == " t1 t2"
    assert folded["choices"][0]["logprobs"]["token_logprobs"] == [-1.0, -2.0]
    assert folded["choices"][0]["finish_reason"] == "length"


def test_an_error_event_inside_a_stream_is_compared_without_its_message():
    error = lambda message: {"error": {"message": message, "type": "InternalServerError", "param": None,  # noqa: E731
                                       "code": 500}}
    assert reply_differences(stream_reply(sse(chunk(" t1"), error("a"), "[DONE]")),
                             stream_reply(sse(chunk(" t1"), error("b"), "[DONE]"))) == []
    assert reply_differences(stream_reply(sse(chunk(" t1"), "[DONE]")),
                             stream_reply(sse(chunk(" t1"), error("b"), "[DONE]")))[0].startswith(
        "body.errors: missing in ours")


def test_the_matrix_has_unique_names_and_covers_both_endpoints_and_bad_input():
    names = [case.name for case in REQUEST_MATRIX]
    assert len(names) == len(set(names))
    assert 40 <= len(names) <= 70
    paths = {case.path for case in REQUEST_MATRIX}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= paths
    assert any(case.stream for case in REQUEST_MATRIX)
    assert any(case.raw_body is not None for case in REQUEST_MATRIX)


def test_run_matrix_sends_each_case_to_both_servers_one_at_a_time():
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        content = "t1" if request.url.host == "ours" or b"max_tokens" not in request.content else "t1 t2"
        return httpx.Response(200, json=chat_body(content))

    cases = [Case("same", "POST", CHAT, body={"model": "m"}), Case("different", "POST", CHAT, body={"max_tokens": 2})]
    report = run_matrix("http://ours", "http://reference", cases, transport=httpx.MockTransport(handler))
    assert sent == ["ours", "reference", "ours", "reference"]
    assert [result.match for result in report.results] == [True, False]
    assert report.mismatched[0].differences == ["body.choices.0.message.content: 't1' != 't1 t2'"]
    assert json.loads(report.to_json())["matched"] == 1


def test_a_server_that_cannot_be_reached_is_a_difference_not_a_crash():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ours":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"ok": True})

    report = run_matrix("http://ours", "http://reference", [Case("models", "GET", "/v1/models")],
                        transport=httpx.MockTransport(handler))
    assert report.results[0].our_status == 0
    assert "status: 0 != 200" in report.results[0].differences
