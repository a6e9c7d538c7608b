"""A wait that passes a few seconds says what it is waiting for; the call still ends by its deadline."""

from __future__ import annotations

from tests.http.hostile import Conn, hostile_server
from tests.http.test_client_hostile_servers import INFO, _http

from .conftest import Cli


def _slow_answer(conn: Conn) -> None:
    if conn.path == "/info":
        conn.send(_http(200, INFO.encode()))
    else:
        conn.stop.wait(30)  # never answers the generation


def test_a_long_wait_for_the_first_token_is_announced_and_ends_at_the_timeout(zephyr: Cli) -> None:
    with hostile_server(_slow_answer) as url:
        result = zephyr("generate", "Hi", "--url", url, url=False, env={"ZEPHYR_TGI_TIMEOUT": "4"})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"... still waiting for {url} (the first token); Ctrl-C stops"
    assert lines[1] == f"error: POST /generate_stream to {url} timed out (ReadTimeout)"


def test_a_quick_answer_says_nothing_about_waiting(zephyr: Cli) -> None:
    result = zephyr("generate", "Hi", "--max-new-tokens", "3")
    assert result.exit_code == 0
    assert "still waiting" not in result.stderr
