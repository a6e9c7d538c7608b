"""Every example runs against the emulator, as a user would run it: a script in a fresh process, without
ZEPHYR_TGI_URL, saying that it uses the emulator. The web app is also read as a browser would (server-sent events),
and the notebook is executed cell by cell by nbclient."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest

from zephyr_tgi import Message, ZephyrClient, render_prompt
from zephyr_tgi.testing import TGIEmulator, expected_reply

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WEB_APP = EXAMPLES / "fastapi_app.py"
NOTEBOOK = EXAMPLES / "zephyr_tgi.ipynb"
# Scripts that run and end; helpers (`_server.py`) are not examples, and the web app serves until stopped.
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_") and p != WEB_APP)
TIMEOUT = 60.0


def emulator_env() -> dict[str, str]:
    """The environment of a user who has no TGI server: no ZEPHYR_TGI_* variable at all."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZEPHYR_TGI_")}


def chat_reply(question: str) -> str:
    """The emulator's answer to a one-question chat without a system prompt."""
    return expected_reply(render_prompt([Message(role="system", content=""), Message(role="user", content=question)]))


def test_every_example_is_collected() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"quickstart.py", "streaming.py"} <= names
    assert WEB_APP.is_file()
    assert NOTEBOOK.is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs_against_the_emulator(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=emulator_env(),
        cwd=EXAMPLES.parent,
        check=False,
    )

    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert "emulator" in completed.stdout.splitlines()[0]


# -- the web app ------------------------------------------------------------------------------------


def read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The next stdout line of `process`, waiting at most `timeout` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            raise AssertionError(f"no output within {timeout} s; stderr:\n{process.communicate()[1]}")
    return process.stdout.readline()


def read_events(url: str, **params: Any) -> list[tuple[str, Any]]:
    """The (event name, JSON data) pairs of one server-sent event stream."""
    with httpx2.Client(timeout=TIMEOUT) as client, client.sse(url, params=params) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(event.event, event.json()) for event in source]


def test_web_app_streams_answers_to_the_browser() -> None:
    process = subprocess.Popen(
        [sys.executable, str(WEB_APP), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=emulator_env(),
    )
    try:
        assert "emulator" in read_line(process)
        opened = read_line(process)
        assert opened.startswith("Open http://127.0.0.1:")
        base = opened.split()[1]

        page = httpx2.get(base, timeout=TIMEOUT)
        assert page.status_code == 200
        assert "new EventSource(" in page.text

        events = read_events(base + "api/chat", q="What is GPTQ?")

        texts = [data["text"] for name, data in events if name == "message"]
        assert len(texts) > 1  # streamed piece by piece, not in one event
        assert "".join(texts) == chat_reply("What is GPTQ?")
        assert events[-1] == (
            "done",
            {"finish_reason": "eos_token", "generated_tokens": events[-1][1]["generated_tokens"]},
        )
        assert httpx2.get(base + "api/chat", params={"q": ""}, timeout=TIMEOUT).status_code == 422

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.strip().endswith("Stopped.")


@pytest.fixture
def web_app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/fastapi_app.py as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("fastapi_app")


@pytest.fixture
def served(web_app: ModuleType) -> Iterator[tuple[str, TGIEmulator]]:
    """The web app in a uvicorn thread on a free port, over an in-process emulator: (base URL, emulator)."""
    import uvicorn

    with TGIEmulator() as emulator:
        server = uvicorn.Server(uvicorn.Config(web_app.create_app(emulator.url), log_level="warning"))
        sock = socket.create_server(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/", emulator
        finally:
            server.should_exit = True
            thread.join(TIMEOUT)
            sock.close()


def test_web_app_reports_a_failed_generation_in_the_stream(served: tuple[str, TGIEmulator]) -> None:
    base, emulator = served
    emulator.set_faults(stream_error_next=1, stream_error_after_tokens=2)

    events = read_events(base + "api/chat", q="Hello")

    assert [name for name, _ in events] == ["message", "message", "failure"]
    assert events[-1][1] == {
        "message": "Request failed during generation: CUDA out of memory",
        "type": "GenerationError",
    }


def test_web_app_passes_the_length_limit_on(served: tuple[str, TGIEmulator]) -> None:
    base, emulator = served

    events = read_events(base + "api/chat", q="Hello", max_new_tokens=3)

    assert events[-1] == ("done", {"finish_reason": "length", "generated_tokens": 3})
    assert emulator.stats.requests[-1].json["parameters"]["max_new_tokens"] == 3


def test_web_app_health(served: tuple[str, TGIEmulator]) -> None:
    base, _ = served

    assert httpx2.get(base + "api/health", timeout=TIMEOUT).json() == {"tgi": True}


# -- the notebook -----------------------------------------------------------------------------------


def notebook_tool() -> Any:
    """scripts/notebook.py, which `make notebook` runs to save the notebook with its outputs."""
    spec = importlib.util.spec_from_file_location("notebook_tool", ROOT / "scripts" / "notebook.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_runs_against_the_emulator_and_its_committed_outputs_are_current() -> None:
    import nbformat

    tool = notebook_tool()
    notebook = tool.execute(NOTEBOOK)  # ZEPHYR_TGI_* unset: the kernel inherits this process's environment
    committed = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    assert tool.normalized(committed) == tool.normalized(notebook), "run `make notebook` and commit the notebook"
    outputs = [o for cell in committed.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3, "the logprob, perplexity and capacity plots are committed"

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "emulator" in code[0].outputs[0].text
    [streaming] = [cell for cell in code if "Write a haiku" in cell.source]
    pieces = [o.text for o in streaming.outputs if o.output_type == "stream"]
    assert len(pieces) > 1, "the streaming cell should print its answer piece by piece"
    [capacity] = [cell for cell in code if "run_load(" in cell.source]
    assert "from zephyr_tgi.bench import" in capacity.source  # the library's load generator draws the curve
    assert [o for o in capacity.outputs if "image/png" in o.get("data", {})], "the capacity curve is plotted"
    assert "finish: " in pieces[-1]
    markdown = [o.data["text/markdown"] for o in outputs if "data" in o and "text/markdown" in o.data]
    assert any("<sub>finish: " in text for text in markdown), "a GenerationResult should render as Markdown"
    assert any(text.startswith("| setting | value |") for text in markdown)
    assert notebook.metadata["kernelspec"]["name"] == "python3"


# -- the tool loop --------------------------------------------------------------------------------


def test_tool_loop_runs_the_tool_then_asks_for_a_text_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    tool_loop = importlib.import_module("tool_loop")
    with TGIEmulator() as emulator, ZephyrClient(emulator.url) as client:
        answer = tool_loop.ask_with_tools(client, "What is the weather in Paris?")
        sent = [r.json for r in emulator.stats.requests if r.path == "/v1/chat/completions"]
    assert answer
    assert len(sent) == tool_loop.MAX_ROUNDS + 1
    assert [body.get("tool_choice") for body in sent] == [None] * tool_loop.MAX_ROUNDS + ["none"]
    # Each round sends the call and its result back as turns zephyr's template renders.
    assert sent[-1]["messages"][-1]["content"].startswith("Result of get_weather: ")


def test_tool_loop_script_prints_the_calls_and_the_answer() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "tool_loop.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=emulator_env(),
        cwd=EXAMPLES.parent,
        check=True,
    )
    lines = completed.stdout.splitlines()
    assert lines[1].startswith("tool call 0: get_weather(")
    assert any(line.startswith("answer -> ") for line in lines)
    assert lines[-1] == "streamed tool call -> {'city': 'example', 'unit': 'celsius'}"


@pytest.fixture(scope="module", params=["vllm", "sglang"])
def dialect_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An emulator speaking vLLM's or SGLang's API, for the examples to find through ZEPHYR_TGI_URL."""
    with TGIEmulator(engine=request.param) as emulator:
        yield emulator.url


def _run_against(script: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = emulator_env() | {"ZEPHYR_TGI_URL": url}  # no ZEPHYR_TGI_ENGINE: the client identifies the engine
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs_unchanged_against_vllm_and_sglang(script: Path, dialect_url: str) -> None:
    completed = _run_against(script, dialect_url)
    assert completed.returncode == 0, completed.stderr
    assert "(from ZEPHYR_TGI_URL)" in completed.stdout


def test_the_perplexity_example_scores_the_text_on_vllm_and_sglang(dialect_url: str) -> None:
    completed = _run_against(EXAMPLES / "perplexity.py", dialect_url)
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"perplexity: \d+\.\d{3} over \d+ tokens", completed.stdout), completed.stdout
