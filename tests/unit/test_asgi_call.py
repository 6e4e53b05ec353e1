"""One HTTP call through an ASGI app in-process: status and headers, body parts in order, the request
body delivered, and a client that leaves stopping a stream (a small FastAPI app stands in for vLLM's)."""
from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serve_app.asgi_call import HttpCall, call_app

app = FastAPI()
stream_state = {"sent": 0, "closed": False}


@app.post("/echo")
async def echo(request: Request):
    return JSONResponse({"got": (await request.json())["x"], "id": request.headers.get("x-request-id")}, status_code=201)


@app.get("/stream")
async def stream():
    async def events():
        try:
            for i in range(1000):
                stream_state["sent"] = i + 1
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.01)
        finally:
            stream_state["closed"] = True
    return StreamingResponse(events(), media_type="text/event-stream")


def collect(call: HttpCall, disconnect_after: int | None = None):
    starts, parts = [], []

    async def scenario():
        gone = asyncio.Event()

        def on_body(body: bytes, more: bool) -> None:
            parts.append((body, more))
            if disconnect_after is not None and len(parts) >= disconnect_after:
                gone.set()
        completed = await call_app(app, call, lambda status, headers: starts.append((status, dict(headers))),
                                   on_body, gone)
        return completed
    return asyncio.run(scenario()), starts, parts


def test_status_headers_and_body_of_a_json_answer():
    completed, starts, parts = collect(HttpCall("POST", "/echo", [("content-type", "application/json"),
                                                                  ("x-request-id", "r1")], b'{"x": 5}'))
    assert completed
    assert starts[0][0] == 201 and starts[0][1]["content-type"] == "application/json"
    assert b"".join(body for body, _ in parts) == b'{"got":5,"id":"r1"}' and parts[-1][1] is False


def test_a_stream_arrives_in_parts_and_stops_when_the_client_leaves():
    stream_state.update(sent=0, closed=False)
    completed, starts, parts = collect(HttpCall("GET", "/stream", []), disconnect_after=3)
    assert starts[0][1]["content-type"].startswith("text/event-stream")
    assert [body for body, _ in parts[:3]] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    # The client left after three parts: the app stops generating, and the response is not complete.
    assert completed is False
    assert stream_state["closed"] and stream_state["sent"] < 10
