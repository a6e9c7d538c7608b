"""A small web app that streams Zephyr's answers to the browser as server-sent events (SSE).

    python examples/fastapi_app.py [--host 127.0.0.1] [--port 8000]     # then open the URL it prints

`GET /` is a one-page chat; `GET /api/chat?q=...` is the event stream: a `data:` event per piece of text
(`{"text": "..."}`), then `event: done` with the finish reason and token count, or `event: failure` with an error
message. A browser that goes away closes its stream, which closes the request to TGI, which stops generating.

Uses the TGI server at ZEPHYR_TGI_URL (and ZEPHYR_TGI_API_KEY) when set; otherwise starts zephyr_tgi's TGI emulator
(stand-in answers, paced 20 ms per token) and says so. `create_app(url)` builds the app for your own server setup.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from _server import server_url
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from zephyr_tgi import AsyncZephyrClient, ZephyrTGIError


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event; JSON keeps the data on one line whatever the text holds."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(tgi_url: str, *, api_key: str | None = None, system: str | None = None) -> FastAPI:
    """The web app, talking to the TGI server at `tgi_url` through one shared async client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncZephyrClient(tgi_url, api_key=api_key, system_prompt=system) as client:
            app.state.client = client
            yield

    app = FastAPI(title="Zephyr chat", lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/api/chat")
    async def chat(
        request: Request,
        q: Annotated[str, Query(min_length=1, max_length=8000, description="The question")],
        max_new_tokens: Annotated[int, Query(ge=1, le=1024)] = 256,
    ) -> StreamingResponse:
        client: AsyncZephyrClient = request.app.state.client

        async def events() -> AsyncIterator[str]:
            try:
                async for chunk in client.chat_stream(q, max_new_tokens=max_new_tokens):
                    if chunk.text:
                        yield sse({"text": chunk.text})
                    if chunk.result is not None:
                        result = chunk.result
                        yield sse(
                            {"finish_reason": result.finish_reason, "generated_tokens": result.generated_tokens},
                            event="done",
                        )
            except ZephyrTGIError as exc:  # the status line is sent already: report the error in the stream
                yield sse({"message": str(exc), "type": type(exc).__name__}, event="failure")

        # no-cache and no proxy buffering: each event must reach the browser when it is written.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.get("/api/health")
    async def health(request: Request) -> dict[str, bool]:
        client: AsyncZephyrClient = request.app.state.client
        return {"tgi": await client.health()}

    return app


PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Zephyr chat</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  form { display: flex; gap: .5rem; } input { flex: 1; padding: .5rem; } button { padding: .5rem 1rem; }
  #answer { white-space: pre-wrap; min-height: 4rem; margin-top: 1rem; } #status { color: #666; font-size: .9rem; }
</style>
<h1>Zephyr chat</h1>
<form><input name="q" placeholder="Ask something" autofocus required><button>Ask</button></form>
<div id="answer"></div>
<div id="status"></div>
<script>
  const form = document.querySelector("form");
  const answer = document.querySelector("#answer");
  const status = document.querySelector("#status");
  let source = null;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (source) source.close();
    answer.textContent = "";
    status.textContent = "...";
    source = new EventSource("/api/chat?" + new URLSearchParams({ q: form.q.value }));
    source.onmessage = (message) => { answer.textContent += JSON.parse(message.data).text; };
    source.addEventListener("done", (message) => {
      const done = JSON.parse(message.data);
      status.textContent = `${done.generated_tokens} tokens, finish: ${done.finish_reason}`;
      source.close();
    });
    source.addEventListener("failure", (message) => {
      status.textContent = "error: " + JSON.parse(message.data).message;
      source.close();
    });
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) { status.textContent = "connection lost"; source.close(); }
    };
  });
</script>
</html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    args = parser.parse_args(argv)
    with server_url(token_latency=0.02) as tgi_url:
        app = create_app(tgi_url, api_key=os.environ.get("ZEPHYR_TGI_API_KEY"))
        # Bind here, so that with --port 0 the port the OS picked can be printed before serving.
        sock = socket.create_server((args.host, args.port))
        host, port = sock.getsockname()[:2]
        print(f"Open http://{host}:{port}/ in a browser (Ctrl-C stops).", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it caught
            pass
        finally:
            sock.close()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
