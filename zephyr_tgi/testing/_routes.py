"""EmulatorApp: TGI's router as axum and tower-http layer it (CORS, HEAD, 405, auth), over the route families."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._engines import engine_named
from ._admin import AdminRoutes
from ._core import JSON, TEXT, AppConfig, Handler, RouteError, RouterCore
from ._dialect import CompletionsDialect
from ._faults import PROXY_UNAVAILABLE_BODY, FaultState
from ._http import HTTPConnection, HTTPRequest
from ._native import NativeRoutes
from ._openai import OpenAIRoutes
from ._requests import BodyError
from ._stats import RecordedRequest, Recorder
from ._tokenizer import EmulatorTokenizer

__all__ = ["CORS_HEADERS", "AppConfig", "EmulatorApp"]

# tower-http 0.5.2's CorsLayer with AllowOrigin::any(), TGI's default, on every response (TGI.md §9).
CORS_HEADERS = (
    ("vary", "origin, access-control-request-method, access-control-request-headers"),
    ("access-control-allow-origin", "*"),
)
# What a preflight (any OPTIONS request) gets in addition: TGI allows GET and POST with a content-type.
_PREFLIGHT_HEADERS = [("access-control-allow-methods", "GET,POST"), ("access-control-allow-headers", "content-type")]
_GENERATION_ROUTES = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"})
# Routes behind --api-key: TGI's `base_routes` (POST / but not GET /; /chat_tokenize is an info route).
_PROTECTED_ROUTES = _GENERATION_ROUTES | {"/tokenize"}


class EmulatorApp:
    """Routes requests to the native, OpenAI-compatible and admin families; owns no sockets."""

    def __init__(
        self,
        config: AppConfig,
        tokenizer: EmulatorTokenizer,
        faults: FaultState,
        recorder: Recorder,
        on_reset: Callable[[], None],
    ) -> None:
        self._config = config
        self._faults = faults
        self._recorder = recorder
        core = RouterCore(config, tokenizer, faults, recorder)
        self._core = core
        self._native = NativeRoutes(core)
        self._dialect: CompletionsDialect | None = None
        if config.engine == "tgi":
            self._routes: dict[str, dict[str, Handler]] = {**self._native.routes(), **OpenAIRoutes(core).routes()}
        else:
            # vLLM and SGLang: their own completions, models, tokenize and health routes; chat completions
            # through the same OpenAI layer as TGI's, its errors in the engine's own body.
            self._dialect = CompletionsDialect(core, engine_named(config.engine))
            chat = OpenAIRoutes(core).routes()["/v1/chat/completions"]
            self._routes = {**self._dialect.routes(), "/v1/chat/completions": chat}
        self._admin_routes = AdminRoutes(core, on_reset).routes()

    async def aclose(self) -> None:
        """Stop background work (the performance model's engine task)."""
        await self._core.aclose()

    def info(self) -> dict[str, Any]:
        """The document GET /info serves."""
        return self._native.info()

    async def handle(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        """Answer one request (or deliberately not, for connection faults)."""
        admin = self._admin_routes.get(request.path)
        routes = admin if admin is not None else self._routes.get(request.path)
        if admin is None:
            recorded = RecordedRequest(request.method, request.path, dict(request.headers), request.json_or_none())
            self._recorder.record(recorded, request.path if routes is not None else "*")
            if self._faults.proxy_unavailable():
                retry_after = self._faults.faults.retry_after or "1"
                await conn.respond(503, PROXY_UNAVAILABLE_BODY, [TEXT, ("retry-after", retry_after)])
                return
        if request.method == "OPTIONS":
            # The CORS layer answers every OPTIONS request as a preflight, before routing.
            await conn.respond(200, b"", _PREFLIGHT_HEADERS)
            return
        if routes is None:
            if self._dialect is not None:  # FastAPI's own answer, not the engine's envelope
                await conn.respond(404, b'{"detail":"Not Found"}', [JSON])
            else:
                await conn.respond(404, b"", [])
            return
        # axum answers HEAD on every GET route: the GET handler runs and the body is dropped.
        method = "GET" if request.method == "HEAD" and "GET" in routes else request.method
        handler = routes.get(method)
        if handler is None:
            allowed = ",".join("GET,HEAD" if name == "GET" else name for name in routes)
            body = b'{"detail":"Method Not Allowed"}' if self._dialect is not None else b""
            await conn.respond(405, body, [("allow", allowed)])
            return
        if self._dialect is not None and self._config.api_key is not None and request.path.startswith("/v1/"):
            # vLLM's --api-key guards the /v1 routes only; /health, /metrics, /tokenize stay open.
            if request.headers.get("authorization", "") != f"Bearer {self._config.api_key}":
                await conn.respond(401, b'{"error":"Unauthorized"}', [JSON])
                return
        elif self._config.api_key is not None and request.path in _PROTECTED_ROUTES and method == "POST":
            expected = f"Bearer {self._config.api_key}".lower()
            if request.headers.get("authorization", "").lower() != expected:
                await conn.respond(401, b"", [])
                return
        if method == "POST" and request.path in _GENERATION_ROUTES:
            if self._faults.take("drop_before_first_byte_next"):
                conn.abort()
                return
            scripted = self._faults.pop_scripted()
            if scripted is not None:
                body = scripted.body.encode("utf-8") if isinstance(scripted.body, str) else scripted.body
                headers = list(scripted.headers.items())
                if scripted.content_type is not None:
                    headers.append(("content-type", scripted.content_type))
                await conn.respond(scripted.status, body, headers)
                return
        try:
            await handler(conn, request)
        except BodyError as exc:
            await conn.respond(exc.status, exc.text.encode("utf-8"), [TEXT])
        except RouteError as exc:
            if self._dialect is not None:
                await self._dialect.error(conn, exc.status, exc.message)
            else:
                await self._core.error(conn, exc.status, exc.message, exc.error_type)
