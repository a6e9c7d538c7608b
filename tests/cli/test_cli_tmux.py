"""`zephyr-tgi chat` in a real terminal: tmux runs it, the test types with send-keys and reads with capture-pane.

This is what click's runner cannot show: readline input on a TTY, tokens appearing while they stream, Ctrl-C
stopping an answer, Ctrl-D leaving. The emulator runs in the test process; its replies are deterministic
(`expected_reply`), so the test knows the exact text to wait for. Every wait is bounded polling of the screen.
tmux comes from scripts/ci/tools-setup.sh; without it the test skips, except in CI (`CI` set) where it fails.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zephyr_tgi.testing import TGIEmulator

from .conftest import chat_reply, last_prompt

ZEPHYR_TGI = Path(sys.executable).with_name("zephyr-tgi")
WAIT = 15.0  # seconds any one expected screen state may take to appear
_EXIT_MARK = "[exit status "


class Terminal:
    """One tmux session on a private server socket, 120x40, running a command."""

    def __init__(self, tmux: str, config: Path) -> None:
        self._tmux = tmux
        self._config = config
        self._socket = f"zephyr-tgi-test-{uuid.uuid4().hex[:12]}"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        completed = subprocess.run(
            [self._tmux, "-L", self._socket, "-f", str(self._config), *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env,
            check=True,
        )
        return completed.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        """Run a shell command in a new session (and tmux server, which passes `env` on to it).

        A shell around the command prints its exit status: tmux's own `pane_dead_status` can stay empty when tmux
        misses the child's exit. The shell traps SIGINT (a handler, not "ignore", which the command would inherit)
        so that Ctrl-C reaches the command without ending the shell.
        """
        wrapped = f'trap : INT; {command}; echo "{_EXIT_MARK}$?]"'
        self._run("new-session", "-d", "-x", "120", "-y", "40", "-s", "test", "sh", "-c", wrapped, env=env)

    def screen(self) -> str:
        """Everything printed so far, wrapped lines joined, trailing spaces removed."""
        text = self._run("capture-pane", "-p", "-J", "-S", "-", "-t", "test")
        return "\n".join(line.rstrip() for line in text.splitlines())

    def type(self, text: str) -> None:
        """Type `text` literally, then Enter."""
        self._run("send-keys", "-t", "test", "-l", text)
        self._run("send-keys", "-t", "test", "Enter")

    def key(self, name: str) -> None:
        """Press a key by tmux name, e.g. C-c."""
        self._run("send-keys", "-t", "test", name)

    def wait_for(self, condition: Callable[[str], bool], what: str) -> str:
        """Poll the screen until `condition(screen)` holds; fail with the screen after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"waited {WAIT:.0f} s for {what}; the terminal shows:\n{screen}")
            time.sleep(0.05)

    def wait_for_text(self, text: str) -> str:
        return self.wait_for(lambda screen: text in screen, repr(text))

    def wait_for_prompt(self, count: int) -> str:
        """Wait until the chat prompt `> ` has been shown `count` times and is the last line."""

        def shown(screen: str) -> bool:
            prompts = [line for line in screen.splitlines() if line == ">" or line.startswith("> ")]
            return len(prompts) >= count and _last_line(screen) == ">"

        return self.wait_for(shown, f"prompt number {count}")

    def wait_for_exit(self) -> int:
        """Wait for the command to end; its exit status, as the wrapping shell printed it."""
        screen = self.wait_for(lambda screen: _EXIT_MARK in screen, "the command to exit")
        return int(screen.rsplit(_EXIT_MARK, 1)[1].split("]", 1)[0])

    def kill(self) -> None:
        subprocess.run([self._tmux, "-L", self._socket, "kill-server"], capture_output=True, timeout=WAIT, check=False)


def _last_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: CI must run scripts/ci/tools-setup.sh before the tests")
        pytest.skip("tmux is not installed (scripts/ci/tools-setup.sh installs it)")
    config = tmp_path / "tmux.conf"
    config.write_text("set -g remain-on-exit on\nset -g history-limit 10000\nset -g status off\n")
    term = Terminal(tmux, config)
    yield term
    term.kill()


@pytest.fixture
def emulator() -> Iterator[TGIEmulator]:
    # Slow enough that a poll of the screen sees an answer half-written.
    with TGIEmulator(host="127.0.0.1", token_latency=0.03) as server:
        yield server


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ZEPHYR_TGI_", "TMUX"))}


def start_chat(terminal: Terminal, emulator: TGIEmulator) -> None:
    terminal.start(shlex.join([str(ZEPHYR_TGI), "chat", "--url", emulator.url]), env=clean_env())
    terminal.wait_for_text("Chatting with TheBloke/zephyr-7B-alpha-GPTQ")
    terminal.wait_for_prompt(1)


def test_chat_streams_answers_and_obeys_commands_in_a_terminal(
    terminal: Terminal, emulator: TGIEmulator, tmp_path: Path
) -> None:
    start_chat(terminal, emulator)

    # A question: the answer streams in (seen half-written), then the prompt comes back.
    question = "What is GPTQ?"
    first = chat_reply(("user", question))
    terminal.type(question)
    partial = terminal.wait_for(
        lambda screen: any(0 < len(line) < len(first) and first.startswith(line) for line in screen.splitlines()[2:]),
        "a half-written answer",
    )
    assert first not in partial.splitlines()
    screen = terminal.wait_for_prompt(2)
    assert f"> {question}\n{first}\n>" in screen

    # /system and /params change the next answer: a pirate's, five tokens long.
    terminal.type("/system Answer like a pirate.")
    terminal.wait_for_text("system prompt set")
    terminal.type("/params max_new_tokens=5")
    terminal.wait_for_text("sampling options: max_new_tokens=5")
    terminal.type("Tell me more")
    screen = terminal.wait_for_text("(the answer was cut after 5 tokens")
    second = chat_reply(
        ("user", question), ("assistant", first), ("user", "Tell me more"), system="Answer like a pirate."
    )
    answer_line = screen.split("> Tell me more\n", 1)[1].splitlines()[0]
    assert answer_line
    assert second.startswith(answer_line)
    terminal.wait_for_prompt(5)

    # Multi-line input: a trailing backslash continues the message, a """ block encloses one.
    terminal.type("first line\\")
    terminal.wait_for(lambda screen: _last_line(screen) == "...", "the continuation prompt")
    terminal.type("second line")
    terminal.wait_for_prompt(6)
    assert "<|user|>\nfirst line\nsecond line</s>" in last_prompt(emulator)
    terminal.type('"""')
    terminal.type("  indented")
    terminal.type('"""')
    terminal.wait_for_prompt(7)
    assert "<|user|>\n  indented</s>" in last_prompt(emulator)

    # /save writes the conversation; /reset forgets it.
    saved = tmp_path / "chat.json"
    terminal.type(f"/save {saved}")
    terminal.wait_for_text(f"saved 8 messages to {saved}")
    data = json.loads(saved.read_text())
    assert data["system"] == "Answer like a pirate."
    assert data["params"] == {"max_new_tokens": 5}
    assert [m["content"] for m in data["messages"][:2]] == [question, first]
    terminal.type("/reset")
    terminal.wait_for_text("conversation reset (8 messages forgotten)")

    # Ctrl-C stops an answer and keeps the session; Ctrl-D leaves with status 0.
    emulator.set_faults(token_latency=0.5)
    terminal.type("/params max_new_tokens=")
    terminal.type("A slow answer, please")
    slow = chat_reply(("user", "A slow answer, please"), system="Answer like a pirate.")
    terminal.wait_for(lambda screen: slow.split()[0] in screen.split("A slow answer, please")[-1], "the first token")
    terminal.key("C-c")
    terminal.wait_for_text("(answer interrupted: this turn is not kept)")
    terminal.wait_for_prompt(11)
    terminal.key("C-d")
    assert terminal.wait_for_exit() == 0


def test_piped_prompt_in_a_terminal_gets_one_answer(terminal: Terminal, emulator: TGIEmulator) -> None:
    command = f"echo 'Piped question' | {shlex.quote(str(ZEPHYR_TGI))} chat --url {emulator.url}"
    terminal.start(command, env=clean_env())

    assert terminal.wait_for_exit() == 0
    assert chat_reply(("user", "Piped question\n")) in terminal.screen().splitlines()
