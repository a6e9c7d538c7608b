"""TGIEmulator: a real HTTP server that behaves like TGI, in a background thread or the current loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import h11

from .._engines import ENGINE_NAMES
from ._faults import Faults, FaultState
from ._http import ClientGone, HTTPConnection, TooLarge
from ._performance import PerformanceModel
from ._routes import CORS_HEADERS, AppConfig, EmulatorApp
from ._stats import EmulatorStats, Recorder
from ._tokenizer import BuiltinTokenizer, EmulatorTokenizer
from ._validation import Limits

__all__ = ["TGIEmulator"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PAYLOAD_TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"


class TGIEmulator:
    """An in-process TGI look-alike serving HTTP/1.1 on loopback (or any host).

    Use it as a context manager (sync or async), or call start()/stop(). Generation is deterministic:
    the reply to a prompt is `expected_reply(prompt, replies=replies)`, or `seed=` the request's seed
    when it samples with an explicit one; a json grammar (or response_format) yields a minimal valid
    instance of the schema and a regex grammar a matching string ("example" if the regex is beyond
    the emulator). `sampling_seed` salts the seed reported for sampling requests that send none.
    `performance` (a `PerformanceModel`) makes generations take the time an emulated GPU batch would, queueing
    beyond its token budget; it replaces `token_latency`.
    `engine="vllm"` or `"sglang"` speaks that engine's API instead of TGI's (routes, errors, streams).

    Args:
        host: The address to listen on.
        port: The port; 0 lets the OS pick a free one (read it back from `url`).
        model_id: The model `/info` reports.
        revision: The model revision `/info` reports.
        api_key: Answer 401 to requests without `Authorization: Bearer <api_key>` (TGI's `--api-key`).
        max_input_tokens: The longest prompt, in tokens (TGI's `--max-input-tokens`).
        max_total_tokens: Prompt + new tokens at most, per request (TGI's `--max-total-tokens`).
        max_concurrent_requests: Requests in flight before the emulator answers 429.
        max_best_of: `best_of` at most.
        max_stop_sequences: Stop sequences per request at most.
        max_top_n_tokens: `top_n_tokens` at most.
        max_client_batch_size: Prompts in one `/v1/completions` request at most (TGI's `--max-client-batch-size`).
        replies: Fixed answers, keyed by a raw prompt or by a chat's last user turn (see `expected_reply`).
        token_latency: Seconds between two generated tokens.
        enable_prefill_logprobs: Return prompt logprobs (TGI's `--enable-prefill-logprobs`).
        chat_template: Serve `/v1/chat/completions` (TGI refuses it for a model without a chat template).
        grammar_support: Accept grammars, as TGI does without `--disable-grammar-support`.
        tokenizer: How prompts are counted and tokenized; default `BuiltinTokenizer()`.
        faults: What should go wrong; change it later with `set_faults()`.
        sampling_seed: Salts the seed reported for sampling requests that send none.
        performance: Time generations as an emulated GPU batch would, instead of `token_latency`.
        engine: The API spoken: "tgi", "vllm" or "sglang".

    Raises:
        ValueError: an unknown `engine`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_id: str = "TheBloke/zephyr-7B-alpha-GPTQ",
        revision: str = "main",
        api_key: str | None = None,
        max_input_tokens: int = 3696,
        max_total_tokens: int = 4096,
        max_concurrent_requests: int = 128,
        max_best_of: int = 2,
        max_stop_sequences: int = 4,
        max_top_n_tokens: int = 5,
        max_client_batch_size: int = 4,
        replies: Mapping[str, str] | None = None,
        token_latency: float = 0.0,
        enable_prefill_logprobs: bool = False,
        chat_template: bool = True,
        grammar_support: bool = True,
        tokenizer: EmulatorTokenizer | None = None,
        faults: Faults | None = None,
        sampling_seed: int | None = None,
        performance: PerformanceModel | None = None,
        engine: str = "tgi",
    ) -> None:
        if engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {engine!r}")
        if engine != "tgi":
            # vLLM and SGLang have one limit, the context window: a prompt may take all of it but one token.
            max_input_tokens = max_total_tokens - 1
        if max_input_tokens >= max_total_tokens:
            raise ValueError(f"max_input_tokens ({max_input_tokens}) must be < max_total_tokens ({max_total_tokens})")
        if performance is not None and performance.max_batch_total_tokens < max_total_tokens:
            # TGI's launcher refuses the same: one request must always fit in a batch.
            raise ValueError(
                f"max_batch_total_tokens ({performance.max_batch_total_tokens}) must be >= "
                f"max_total_tokens ({max_total_tokens})"
            )
        self._host = host
        self._port = port
        limits = Limits(
            max_concurrent_requests=max_concurrent_requests,
            max_best_of=max_best_of,
            max_stop_sequences=max_stop_sequences,
            max_top_n_tokens=max_top_n_tokens,
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            max_client_batch_size=max_client_batch_size,
        )
        self._config = AppConfig(
            model_id=model_id,
            revision=revision,
            api_key=api_key,
            limits=limits,
            replies=dict(replies) if replies is not None else None,
            token_latency=token_latency,
            enable_prefill_logprobs=enable_prefill_logprobs,
            chat_template=chat_template,
            grammar_support=grammar_support,
            seed_salt=sampling_seed,
            performance=performance,
            engine=engine,
        )
        self._faults = FaultState(faults if faults is not None else Faults())
        self._recorder = Recorder(max_concurrent_requests, max_input_tokens, max_total_tokens)
        self._app = EmulatorApp(self._config, tokenizer or BuiltinTokenizer(), self._faults, self._recorder, self.reset)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._listening = threading.Event()
        self._stopped = False
        self._thread_error: BaseException | None = None
        self._connections: set[tuple[asyncio.Task[None], HTTPConnection]] = set()
        self.on_listening: Callable[[str], None] | None = None

    # --- public surface -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:8080" (the port is known once start() has bound it)."""
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the requested one before start() binds)."""
        return self._port

    @property
    def engine(self) -> str:
        """The engine whose API this emulator speaks."""
        return self._config.engine

    @property
    def faults(self) -> Faults:
        """The live fault knobs; mutations apply to the next requests."""
        return self._faults.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults.swap(value)

    @property
    def listening(self) -> bool:
        """Whether the socket accepts connections yet."""
        return self._listening.is_set()

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs atomically from any thread (unknown names raise ValueError).

        Args:
            **changes: `Faults` fields and their new values, e.g. `overload_next=2`.
        """
        self._faults.update(changes)

    def reset(self) -> None:
        """Clear faults, stats and the request log."""
        self._faults.reset()
        self._recorder.reset()

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the request counters."""
        return self._recorder.snapshot()

    def info(self) -> dict[str, Any]:
        """The document GET /info serves."""
        return self._app.info()

    def start(self) -> TGIEmulator:
        """Serve in a daemon thread; returns once listening (or at once while refusing connections)."""
        if self._stopped:
            raise RuntimeError("a stopped TGIEmulator cannot be restarted; create a new one")
        if self._thread is not None:
            return self
        self._sock = self._bind()
        self._thread = threading.Thread(target=self._thread_main, name=f"tgi-emulator-{self.port}", daemon=True)
        self._thread.start()
        if self.faults.refuse_connections_for > 0:
            return self
        if not self._listening.wait(_START_TIMEOUT) or self._thread_error is not None:
            self.stop()
            raise RuntimeError(f"TGI emulator failed to start: {self._thread_error!r}")
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then join the thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is None and self._loop is None:
            self._close_socket()
            return
        if self._thread is not None:
            self._loop_ready.wait(_START_TIMEOUT)
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join(_STOP_TIMEOUT)
            self._close_socket()
        # In serve_forever() mode the loop is still using the socket; serve_forever closes it.

    def __enter__(self) -> TGIEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> TGIEmulator:
        # Binding and waiting for the thread happen off the caller's loop.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def serve_forever(self) -> None:
        """Serve on the running loop until stop() is called or the task is cancelled."""
        if self._sock is None:
            self._sock = self._bind()
        try:
            await self._serve()
        finally:
            self._stopped = True
            self._close_socket()

    # --- internals ----------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        """Create and bind the socket without listening: until listen(), connects are refused."""
        infos = socket.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        return sock

    def _close_socket(self) -> None:
        if self._sock is not None and self._sock.fileno() != -1:
            self._sock.close()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._thread_error = exc
            self._listening.set()
            self._loop_ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._loop_ready.set()
        if self._stopped:
            return
        sock = self._sock
        assert sock is not None
        refuse_for = self.faults.refuse_connections_for
        if refuse_for > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), refuse_for)
            if self._stop_event.is_set():
                return
        server = await asyncio.start_server(self._on_connection, sock=sock, backlog=1024, limit=1 << 20)
        self._faults.mark_listening()
        self._listening.set()
        if self.on_listening is not None:
            self.on_listening(self.url)
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            for task, conn in list(self._connections):
                conn.abort()
                task.cancel()
            tasks = [task for task, _conn in self._connections]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._app.aclose()
            await server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = HTTPConnection(reader, writer, max_body=self._config.payload_limit, every_response=CORS_HEADERS)
        self._recorder.connected()
        task = asyncio.current_task()
        assert task is not None
        entry = (task, conn)
        self._connections.add(entry)
        try:
            while not conn.closed:
                request = await conn.receive()
                if request is None:
                    break
                if isinstance(request, TooLarge):
                    await conn.respond(413, _PAYLOAD_TOO_LARGE, [("content-type", "text/plain; charset=utf-8")])
                    break
                await self._app.handle(conn, request)
        except (ClientGone, ConnectionError):
            pass
        except h11.LocalProtocolError:
            # Something we were asked to send is not valid HTTP (e.g. a scripted 1xx status): reset.
            conn.abort()
        except asyncio.CancelledError:
            # stop() cancels connection tasks; finishing normally keeps asyncio's callback quiet.
            pass
        finally:
            self._connections.discard(entry)
            conn.close()
