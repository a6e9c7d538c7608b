"""The interactive side of `zephyr-tgi chat`: multi-line input, slash commands, a streamed conversation.

Kept apart from the click wiring so that the session reads like what it does: read a message, run a command or
ask it, print the answer as it streams. Input and output are injected, so a test can drive a session with a list
of lines and a terminal (tmux) test drives the real thing.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zephyr_tgi import Conversation, GenerationResult, SamplingParams, ServerInfo, ZephyrClient

from .waiting import until_first

__all__ = [
    "CONTINUATION_PROMPT",
    "HELP",
    "PROMPT",
    "ChatSession",
    "MessageReader",
    "cut_note",
    "dropped_note",
    "fit_answer_length",
    "merge_sampling",
    "parse_assignments",
]

PROMPT = "> "
CONTINUATION_PROMPT = "... "
_BLOCK = '"""'

HELP = """\
Type a message and press Enter; the answer streams in. Multi-line input: end a line with \\ to continue it,
or start a block with \"\"\" and end it with \"\"\". Start a message with // to send a text that begins with /.
  /help                 this help
  /system [TEXT]        show the system prompt, or set it (/system - removes it)
  /params [KEY=VALUE]   show the sampling options, or change them (KEY= unsets; values are JSON or text)
  /reset                forget the conversation (the system prompt and options stay)
  /history              show the conversation so far
  /save FILE            write the conversation as JSON (zephyr-tgi chat --load FILE resumes it)
  /load FILE            replace the conversation with a saved one
  /exit, /quit          leave (Ctrl-D too); Ctrl-C stops an answer or clears the input"""


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """`key=value` words as a dict: values parsed as JSON when they are JSON, else kept as text; `key=` is None.

    Raises:
        ValueError: a word without `=` or with an empty key.
    """
    changes: dict[str, Any] = {}
    for word in words:
        key, sep, raw = word.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {word!r}")
        if raw == "":
            changes[key] = None
            continue
        try:
            changes[key] = json.loads(raw)
        except ValueError:
            changes[key] = raw
    return changes


def merge_sampling(base: SamplingParams | None, changes: Mapping[str, Any]) -> SamplingParams | None:
    """`base` with `changes` applied (None values unset a field); None when nothing is left set.

    Raises:
        ConfigurationError: an unknown option or a value TGI would reject.
    """
    from zephyr_tgi._client.params import merge_params

    data: dict[str, Any] = {name: getattr(base, name) for name in base.model_fields_set} if base else {}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return merge_params(data) if data else None


def dropped_note(count: int) -> str:
    """What to tell when `count` messages did not fit the window of the last request."""
    return f"{count} earlier message{'s' if count != 1 else ''} left out to fit the context window"


def cut_note(result: GenerationResult | None, *, how_to_lengthen: str) -> str | None:
    """What to tell when the answer stopped at its length limit (finish reason `length`); None otherwise."""
    if result is None or result.finish_reason != "length":
        return None
    return f"(the answer was cut after {result.generated_tokens} tokens: {how_to_lengthen} for a longer one)"


def fit_answer_length(conversation: Conversation, text: str, limits: ServerInfo) -> tuple[int | None, str | None]:
    """A `max_new_tokens` that fits the window next to this turn, and a note, when the one set does not.

    What `generate` does for a raw prompt (the client lowers the value and says so), done for a chat turn:
    (None, None) when the value set fits, or none is set.
    """
    from zephyr_tgi import APIError, Message

    params = conversation.params
    wanted = params.max_new_tokens if params is not None else None
    if wanted is None or wanted <= limits.max_total_tokens - limits.max_input_tokens:
        return None, None  # fits next to any prompt the server accepts: no need to count
    turns = [*conversation.messages, Message(role="user", content=text)]
    try:
        tokens = conversation.client.count_tokens(turns, system=conversation.system)
    except APIError:  # no /tokenize here: keep to what fits next to any prompt the server accepts
        safe = limits.max_total_tokens - limits.max_input_tokens
        return safe, (
            f"max_new_tokens lowered from {wanted} to {safe}: the prompt could not be counted here, and {safe} fits "
            f"next to any prompt the server accepts (window {limits.max_total_tokens}, input {limits.max_input_tokens})"
        )
    # A longer history loses old turns until it fits max_input_tokens, so that is the most it can count.
    counted = min(tokens, limits.max_input_tokens)
    available = limits.max_total_tokens - counted
    if wanted <= available:
        return None, None
    note = (
        f"max_new_tokens lowered from {wanted} to {available}: the prompt is {counted} tokens and the server's "
        f"window is {limits.max_total_tokens}"
    )
    return available, note


def describe_params(params: SamplingParams | None) -> str:
    """The options set, as `key=value` words (what `/params` accepts back)."""
    if params is None or not params.model_fields_set:
        return "(none set: the server's defaults, greedy decoding)"
    dumped = params.model_dump(mode="json", include=params.model_fields_set)
    return " ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in sorted(dumped.items()))


@dataclass
class MessageReader:
    """Reads one user message: a line, lines joined by a trailing backslash, or a triple-quoted block."""

    read_line: Callable[[str], str]  # like input(): raises EOFError at the end, KeyboardInterrupt on Ctrl-C

    def next_message(self) -> str:
        """The next message as typed (multi-line input joined with newlines)."""
        line = self.read_line(PROMPT)
        if line.lstrip().startswith(_BLOCK):
            return self._block(line.lstrip()[len(_BLOCK) :])
        lines: list[str] = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = self.read_line(CONTINUATION_PROMPT)
        lines.append(line)
        return "\n".join(lines)

    def _block(self, first: str) -> str:
        lines: list[str] = []
        line = first
        while not line.rstrip().endswith(_BLOCK):
            lines.append(line)
            line = self.read_line(CONTINUATION_PROMPT)
        lines.append(line.rstrip()[: -len(_BLOCK)])
        # In the usual layout the quotes stand on lines of their own: those lines are not part of the text.
        if len(lines) > 1 and not lines[-1].strip():
            lines.pop()
        if len(lines) > 1 and not lines[0].strip():
            lines.pop(0)
        return "\n".join(lines)


@contextlib.contextmanager
def _closing(stream: Iterator[Any]) -> Iterator[None]:
    """Close a generator when the block ends (an interrupted answer closes its connection at once)."""
    try:
        yield
    finally:
        if isinstance(stream, Generator):
            stream.close()


class ChatSession:
    """A terminal chat over a `Conversation`: the history stays inside the server's context window."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        read_line: Callable[[str], str],
        write: Callable[[str], None],
        note: Callable[[str], None],
        limits: ServerInfo | None = None,
    ) -> None:
        self.conversation = conversation
        self._limits = limits  # the server's window: an oversized max_new_tokens is lowered per turn
        self._reader = MessageReader(read_line)
        self._write = write  # the answer's text, as it streams (stdout)
        self._note = note  # one line about the session (stderr)

    @property
    def client(self) -> ZephyrClient:
        """The client the conversation talks through."""
        return self.conversation.client

    def run(self) -> None:
        """Read messages and commands until /exit or the end of input."""
        while True:
            try:
                text = self._reader.next_message()
            except EOFError:
                self._write("\n")
                return
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the input, as in a shell
                self._write("\n")
                continue
            if not text.strip():
                continue
            if text.startswith("//"):
                self.ask(text[1:])
            elif text.startswith("/"):
                if not self.command(text):
                    return
            else:
                self.ask(text)

    def ask(self, text: str) -> None:
        """Send one user turn and stream the answer; errors are reported and the session goes on."""
        from zephyr_tgi import ZephyrTGIError

        try:
            fitted, lowered = fit_answer_length(self.conversation, text, self._limits) if self._limits else (None, None)
        except ZephyrTGIError as exc:
            self._note(f"error: {exc}")
            return
        if lowered is not None:
            self._note(lowered)
        overrides: dict[str, Any] = {"max_new_tokens": fitted} if fitted is not None else {}
        stream = self.conversation.ask_stream(text, **overrides)
        wrote = False
        result = None
        try:
            with _closing(stream):
                for chunk in until_first(stream, self.conversation.client.base_url, "the first token"):
                    if chunk.text:
                        self._write(chunk.text)
                        wrote = True
                    if chunk.result is not None:
                        result = chunk.result
        except KeyboardInterrupt:
            self._write("\n")
            self._note("(answer interrupted: this turn is not kept)")
            return
        except ZephyrTGIError as exc:
            if wrote:
                self._write("\n")
            self._note(f"error: {exc}")
            return
        self._write("\n")
        if self.conversation.dropped:
            self._note(f"({dropped_note(self.conversation.dropped)})")
        cut = cut_note(result, how_to_lengthen="/params max_new_tokens=N")
        if cut is not None:
            self._note(cut)

    def command(self, text: str) -> bool:
        """Run a slash command; False means leave the session."""
        from zephyr_tgi import ZephyrTGIError

        name, _, argument = text.partition(" ")
        argument = argument.strip()
        handler = self._commands().get(name.lower())
        if handler is None:
            self._note(f"error: unknown command {name} (/help lists them)")
            return True
        try:
            return handler(argument)
        except (ZephyrTGIError, ValueError, OSError) as exc:
            self._note(f"error: {exc}")
            return True

    def _commands(self) -> dict[str, Callable[[str], bool]]:
        return {
            "/help": self._help,
            "/exit": self._exit,
            "/quit": self._exit,
            "/system": self._system,
            "/params": self._params,
            "/reset": self._reset,
            "/history": self._history,
            "/save": self._save,
            "/load": self._load,
        }

    def _help(self, _argument: str) -> bool:
        self._note(HELP)
        return True

    def _exit(self, _argument: str) -> bool:
        return False

    def _system(self, argument: str) -> bool:
        if not argument:
            # None falls back to the client's system_prompt (ZEPHYR_TGI_SYSTEM_PROMPT); "" is an empty system turn.
            current = self.conversation.system
            if current is None:
                current = self.client.system_prompt
            self._note(f"system prompt: {current!r}" if current else "no system prompt")
        elif argument == "-":
            self.conversation.system = ""
            self._note("system prompt removed")
        else:
            self.conversation.system = argument
            self._note("system prompt set")
        return True

    def _params(self, argument: str) -> bool:
        if argument:
            changes = parse_assignments(shlex.split(argument))
            self.conversation.params = merge_sampling(self.conversation.params, changes)
        self._note(f"sampling options: {describe_params(self.conversation.params)}")
        return True

    def _reset(self, _argument: str) -> bool:
        count = len(self.conversation.messages)
        self.conversation.reset()
        self._note(f"conversation reset ({count} message{'s' if count != 1 else ''} forgotten)")
        return True

    def _history(self, _argument: str) -> bool:
        if self.conversation.system:
            self._note(f"[system] {self.conversation.system}")
        for message in self.conversation.messages:
            self._note(f"[{message.role}] {message.content}")
        if not self.conversation.messages:
            self._note("(no messages yet)")
        return True

    def _save(self, argument: str) -> bool:
        if not argument:
            raise ValueError("usage: /save FILE")
        path = Path(argument).expanduser()
        path.write_text(self.conversation.to_json(), encoding="utf-8")
        count = len(self.conversation.messages)
        self._note(f"saved {count} message{'s' if count != 1 else ''} to {path}")
        return True

    def _load(self, argument: str) -> bool:
        from zephyr_tgi import Conversation

        if not argument:
            raise ValueError("usage: /load FILE")
        path = Path(argument).expanduser()
        self.conversation = Conversation.from_json(path.read_text(encoding="utf-8"), self.client)
        count = len(self.conversation.messages)
        self._note(f"loaded {count} message{'s' if count != 1 else ''} from {path}")
        return True
