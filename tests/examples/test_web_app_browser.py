"""The FastAPI example's page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium): type a question, watch the answer stream in, read the token count and finish reason, and see the error
the page shows when the server is gone.

Chromium comes from scripts/ci/tools-setup.sh; without it the tests skip, except in CI (`CI` set) where they fail.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from zephyr_tgi import ZephyrClient
from zephyr_tgi.testing import TGIEmulator

WAIT_S = 30.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail(f"{names[0]} is not installed: CI must run scripts/ci/tools-setup.sh before the tests")
    pytest.skip(f"{names[0]} is not installed (scripts/ci/tools-setup.sh installs it)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium with a fresh profile, nothing in the background, through Debian's chromedriver."""
    chromium = _tool("chromium", "chromium-browser")
    driver_path = _tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


class WebApp:
    """examples/fastapi_app.py in a uvicorn thread on a free port, over an emulator paced 30 ms per token."""

    def __init__(self, web_app: ModuleType) -> None:
        import uvicorn

        self.emulator = TGIEmulator(token_latency=0.03).start()
        self._server = uvicorn.Server(uvicorn.Config(web_app.create_app(self.emulator.url), log_level="warning"))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/"
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(WAIT_S)
        self._sock.close()
        self.emulator.stop()


@pytest.fixture
def web_app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/fastapi_app.py as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("fastapi_app")


@pytest.fixture
def app(web_app: ModuleType) -> Iterator[WebApp]:
    served = WebApp(web_app)
    try:
        yield served
    finally:
        served.close()


def ask(browser: Any, question: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.NAME, "q")
    field.clear()
    field.send_keys(question)
    browser.find_element(By.TAG_NAME, "button").click()


def text_of(browser: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def test_the_answer_streams_in_and_ends_with_token_count_and_finish_reason(browser: Any, app: WebApp) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app.url)
    ask(browser, "Tell me a short story")
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.01)
    seen: list[str] = []

    def grown(driver: Any) -> bool:
        text = text_of(driver, "#answer")
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        return "finish:" in text_of(driver, "#status")

    wait.until(grown)
    final = text_of(browser, "#answer")
    assert len(seen) >= 3, f"the answer should appear piece by piece, saw {len(seen)} states"
    assert all(final.startswith(partial) for partial in seen), "each state extends the one before"
    with ZephyrClient(app.emulator.url) as client:  # the emulator's answers are deterministic: the same one
        expected = client.chat("Tell me a short story", max_new_tokens=256)
    assert final == expected.text.strip()  # the DOM's text, as a browser shows it
    assert text_of(browser, "#status") == f"{expected.generated_tokens} tokens, finish: {expected.finish_reason}"


def test_the_page_says_so_when_the_server_is_gone(browser: Any, app: WebApp) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app.url)
    app.emulator.stop()  # TGI goes away; the web app is still up and reports the failure in the stream
    ask(browser, "Hello?")
    WebDriverWait(browser, WAIT_S).until(lambda driver: text_of(driver, "#status").startswith("error: "))
    assert "connect" in text_of(browser, "#status").lower()
