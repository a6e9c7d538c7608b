"""`chat` and `generate` behave alike: unquoted words, cut answers, oversized --max-new-tokens, empty prompts; the
chat banner names the emulator; a URL with a path is recognised; `health` tells its three failures apart.

All against the in-process emulator over real HTTP. "A TGI that is not the emulator" is the emulator behind a
small forwarding server that hides the emulator's admin routes, as a real TGI has none.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from zephyr_tgi._cli.target import Health, split_route
from zephyr_tgi.testing import TGIEmulator

from .conftest import Cli, chat_reply, last_prompt

# -- unquoted words -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_unquoted_words_join_into_one_prompt(zephyr: Cli, emulator: TGIEmulator, command: str) -> None:
    result = zephyr(command, "What", "is", "GPTQ", "--no-stream")

    assert result.exit_code == 0, result.output
    if command == "chat":
        assert result.stdout == chat_reply(("user", "What is GPTQ")) + "\n"
    else:
        assert last_prompt(emulator) == "What is GPTQ"


# -- a cut answer says so, in every mode --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["chat", "generate"])
@pytest.mark.parametrize(
    "mode", [(), ("--no-stream",), ("--json",), ("--jsonl",)], ids=["stream", "whole", "json", "jsonl"]
)
def test_a_cut_answer_says_so(zephyr: Cli, command: str, mode: tuple[str, ...]) -> None:
    result = zephyr(command, "Tell me a story", "--max-new-tokens", "3", *mode)

    assert result.exit_code == 0, result.output
    assert "(the answer was cut after 3 tokens: --max-new-tokens N for a longer one)" in result.stderr
    if mode in (("--json",), ("--jsonl",)):
        last = json.loads(result.stdout.splitlines()[-1])
        assert (last.get("result") or last)["finish_reason"] == "length"


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_an_answer_that_ends_by_itself_says_nothing_about_cutting(zephyr: Cli, command: str) -> None:
    result = zephyr(command, "Hi", "--max-new-tokens", "400")

    assert result.exit_code == 0, result.output
    assert "cut" not in result.stderr


# -- oversized --max-new-tokens and empty prompts: the same for chat and generate ---------------------------


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_an_oversized_max_new_tokens_is_lowered_with_a_note(zephyr: Cli, emulator: TGIEmulator, command: str) -> None:
    result = zephyr(command, "Hi", "--max-new-tokens", "100000", "--no-stream")

    assert result.exit_code == 0, result.output
    lowered = re.search(r"max_new_tokens lowered from 100000 to (\d+): the prompt is (\d+) tokens", result.stderr)
    assert lowered is not None, result.stderr
    to, prompt_tokens = int(lowered[1]), int(lowered[2])
    assert to + prompt_tokens == 4096  # the whole window, as the server reports it
    generations = [r for r in emulator.stats.requests if r.path in ("/generate", "/generate_stream")]
    assert generations[-1].json["parameters"]["max_new_tokens"] == to


def test_an_oversized_max_new_tokens_in_a_session_is_lowered_per_turn(zephyr: Cli) -> None:
    result = zephyr("chat", "-i", "--max-new-tokens", "100000", input="Hello\nAnd then?\n")

    assert result.exit_code == 0, result.output
    assert result.stderr.count("max_new_tokens lowered from 100000 to ") == 2
    assert "error" not in result.stderr


@pytest.mark.parametrize("command", ["chat", "generate"])
@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_a_usage_error(zephyr: Cli, emulator: TGIEmulator, command: str, prompt: str) -> None:
    result = zephyr(command, prompt)

    assert result.exit_code == 2
    assert "the prompt is empty" in result.stderr
    assert emulator.stats.requests == []  # refused before anything is sent


# -- the banner names the emulator --------------------------------------------------------------------------


class _HideAdminRoutes(BaseHTTPRequestHandler):
    """Forwards to the emulator, except its admin routes: a server that answers like TGI and nothing more."""

    upstream = ""
    hidden: tuple[str, ...] = ("/__emulator__",)

    def _forward(self, method: str) -> None:
        if self.path.startswith(self.hidden):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        answer = httpx2.request(method, self.upstream + self.path, content=body, headers=headers, timeout=30)
        self.send_response(answer.status_code)
        for name in ("content-type",):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextlib.contextmanager
def forwarding(upstream: str, hidden: tuple[str, ...]) -> Iterator[str]:
    """A server forwarding to `upstream`, answering 404 on the `hidden` route prefixes; yields its URL."""
    handler = type("Handler", (_HideAdminRoutes,), {"upstream": upstream, "hidden": hidden})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def plain_tgi(emulator: TGIEmulator) -> Iterator[str]:
    with forwarding(emulator.url, ("/__emulator__",)) as url:
        yield url


def test_without_tokenize_an_oversized_max_new_tokens_falls_back_to_what_always_fits(emulator: TGIEmulator) -> None:
    with forwarding(emulator.url, ("/__emulator__", "/tokenize")) as url:
        result = Cli(url)("chat", "Hi", "--max-new-tokens", "100000", "--no-stream")

    assert result.exit_code == 0, result.output
    assert "max_new_tokens lowered from 100000 to 400: the prompt could not be counted here" in result.stderr


def test_the_banner_says_when_the_server_is_the_emulator(zephyr: Cli) -> None:
    result = zephyr("chat", "-i", input="/exit\n")

    assert result.exit_code == 0, result.output
    assert "(the zephyr-tgi emulator: stand-in answers, not the model's)" in result.stderr.splitlines()[0]


def test_the_banner_of_another_server_does_not(plain_tgi: str) -> None:
    result = Cli(plain_tgi)("chat", "-i", input="Hello\n/exit\n")

    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"Chatting with TheBloke/zephyr-7B-alpha-GPTQ at {plain_tgi}. ")
    assert "emulator" not in result.stderr
    assert result.stdout.strip()  # the answers came through the forwarding server


# -- a URL with a path --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route", ["/generate", "/generate_stream/", "/v1/chat/completions", "/v1", "/info?x=1", "/ping", "/docs"]
)
def test_a_url_ending_with_a_route_is_cut_back_with_a_note(zephyr: Cli, emulator: TGIEmulator, route: str) -> None:
    result = zephyr("chat", "Hi", url=False, env={"ZEPHYR_TGI_URL": emulator.url + route})

    assert result.exit_code == 0, result.output
    assert result.stdout == chat_reply(("user", "Hi")) + "\n"
    assert f"is a route, not part of the server's address: using {emulator.url}" in result.stderr


def test_a_proxy_prefix_before_a_route_is_kept() -> None:
    base = split_route("https://gateway.example/tgi/generate")
    assert (base.url, base.dropped_route, base.path) == ("https://gateway.example/tgi", "/generate", "/tgi")
    assert split_route("http://h:8080").dropped_route is None


def test_a_404_from_a_url_with_an_unknown_path_names_the_base_url(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("info", url=False, env={"ZEPHYR_TGI_URL": emulator.url + "/somewhere"})

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith("error: HTTP 404")
    assert f"so the base URL is probably {emulator.url}" in result.stderr


# -- health: not reachable, not TGI, unhealthy ---------------------------------------------------------------


def test_health_of_a_url_nothing_listens_on_is_not_reachable(zephyr: Cli) -> None:
    with TGIEmulator() as gone:
        url = gone.url
    result = zephyr("health", "--json", url=False, env={"ZEPHYR_TGI_URL": url})

    assert result.exit_code == 3
    assert json.loads(result.stdout)["state"] == str(Health.UNREACHABLE)


def test_health_of_something_that_is_not_tgi_says_so(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("health", url=False, env={"ZEPHYR_TGI_URL": emulator.url + "/not-tgi"})

    assert result.exit_code == 4
    assert result.stdout.startswith(f"{emulator.url}/not-tgi: not TGI: ")
    assert f"the base URL is probably {emulator.url}" in result.stderr


def test_health_of_a_tgi_that_is_not_healthy_says_unhealthy(zephyr: Cli, emulator: TGIEmulator) -> None:
    emulator.set_faults(unavailable_for=60.0)

    result = zephyr("health")

    assert result.exit_code == 1
    assert result.stdout.startswith(f"{emulator.url}: unhealthy")
