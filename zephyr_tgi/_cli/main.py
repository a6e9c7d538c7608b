"""The `zephyr-tgi` command line: serve, chat, generate, info, health, tokenize, variants, emulator.

A thin shell over the public API (docs/cli.md). Output for people goes to stdout (answers) and stderr (progress,
notes); `--json` prints machine-readable output instead. Errors print one line, `error: <message>`, on stderr and
exit 1 (2 for usage errors, 130 for Ctrl-C); `--debug` adds the traceback. Heavy imports happen inside the
commands, so `zephyr-tgi --help` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from .. import __version__
from .bench import bench as bench_command
from .chat import ChatSession, cut_note, dropped_note, fit_answer_length, merge_sampling, parse_assignments
from .containers import down, ps
from .deploy import deploy
from .target import BaseURL, Health, diagnose, is_emulator, split_route, wrong_path_hint
from .waiting import notice_if_slow, until_first

if TYPE_CHECKING:
    from zephyr_tgi import (
        Conversation,
        GenerationResult,
        ProgressEvent,
        SamplingParams,
        StreamChunk,
        TGIServer,
        ZephyrClient,
    )
    from zephyr_tgi.testing import TGIEmulator

__all__ = ["cli", "main"]

_F = TypeVar("_F", bound=Callable[..., Any])
_DEBUG = "zephyr_tgi.debug"
_BASE_URL = "zephyr_tgi.base_url"
_PRESETS = ("model_card", "zephyr_card", "greedy")
# Per-token and prefill details make --json output long; the one-line summary is what scripts read.
_BULKY = {"tokens", "prefill", "top_tokens", "best_of_sequences"}
OutputMode = Literal["text", "json", "jsonl"]


# -- errors and exit codes ----------------------------------------------------------------------------


class _Main(click.Group):
    """The command group: turns our errors into one line and an exit code, and Ctrl-C into 130."""

    def invoke(self, ctx: click.Context) -> Any:
        _show_library_notes()
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`zephyr-tgi chat ... | head`): nothing left to tell anyone. Point stdout at
            # /dev/null so that the interpreter's final flush does not fail a second time.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except Exception as exc:
            _fail(ctx, exc)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text("Docs: docs/cli.md. Server URL and key come from --url/--api-key or the environment.")


class _TerminalNotes(logging.Handler):
    """The library's warnings (a lowered max_new_tokens, a retry) as plain lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _show_library_notes() -> None:
    """Route the `zephyr_tgi` logger's warnings to the terminal, once; without this they would depend on
    logging's last-resort handler, which any logging set-up in the process silently turns off."""
    library = logging.getLogger("zephyr_tgi")
    if not any(isinstance(handler, _TerminalNotes) for handler in library.handlers):
        handler = _TerminalNotes(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        library.addHandler(handler)


def _fail(ctx: click.Context, exc: BaseException) -> None:
    """Report an error in one line (plus indented details for multi-line messages) and exit 1."""
    from zephyr_tgi import ZephyrTGIError

    if ctx.meta.get(_DEBUG):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, ZephyrTGIError | OSError):
        first, *details = (str(exc) or type(exc).__name__).splitlines()
        click.echo(f"error: {first}", err=True)
        for line in details:
            click.echo(f"  {line}", err=True)
        hint = _not_found_hint(ctx, exc) or _no_server_hint(exc)
        if hint is not None:
            click.echo(f"  {hint}", err=True)
    else:  # a bug in zephyr_tgi: say so instead of pretending it is the user's problem
        hint = "" if ctx.meta.get(_DEBUG) else "; rerun with --debug for the traceback"
        click.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (a bug in zephyr-tgi, please report it{hint})", err=True
        )
    ctx.exit(1)


def _no_server_hint(exc: BaseException) -> str | None:
    """For a refused connection: how to get a server there."""
    from zephyr_tgi import APIConnectionError

    if isinstance(exc, APIConnectionError) and exc.connect_failed:
        return "check --url (or ZEPHYR_TGI_URL); `zephyr-tgi serve` starts a server, `zephyr-tgi ps` lists ours"
    return None


def _not_found_hint(ctx: click.Context, exc: BaseException) -> str | None:
    """For a 404 from a URL with a path: where the server's base URL probably is."""
    from zephyr_tgi import APIStatusError

    base = ctx.meta.get(_BASE_URL)
    if isinstance(exc, APIStatusError) and exc.status_code == 404 and isinstance(base, BaseURL):
        return wrong_path_hint(base)
    return None


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG] = True  # meta is shared by the group's and the command's contexts


# -- shared options -----------------------------------------------------------------------------------


def _debug_option(f: _F) -> _F:
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="Show the traceback of an error.",
    )(f)


def _json_option(f: _F) -> _F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")(f)


def _server_options(f: _F) -> _F:
    f = click.option(
        "--api-key",
        envvar="ZEPHYR_TGI_API_KEY",
        show_envvar=True,
        default=None,
        help="The server's api key (TGI's --api-key); never printed.",
    )(f)
    return click.option(
        "--url",
        envvar="ZEPHYR_TGI_URL",
        show_envvar=True,
        multiple=True,
        metavar="URL",
        help="Base URL of the TGI server, e.g. http://127.0.0.1:8080. Repeat it (or separate URLs with commas) "
        "for several replicas: each request goes to a healthy one, the least busy first (docs/replicas.md).",
    )(f)


def _sampling_options(f: _F) -> _F:
    options = (
        click.option("--preset", type=click.Choice(_PRESETS), help="Start from a preset of sampling options."),
        click.option("--max-new-tokens", type=int, help="Longest answer, in tokens."),
        click.option("--temperature", type=float, help="Sampling temperature (0 = greedy)."),
        click.option("--top-p", type=float, help="Nucleus sampling (1.0 = off)."),
        click.option("--top-k", type=int, help="Sample among the k likeliest tokens."),
        click.option("--seed", type=int, help="Seed for reproducible sampling."),
        click.option("--stop", multiple=True, help="A stop sequence (repeatable; </s> is always one)."),
        click.option(
            "-p",
            "--param",
            "extra",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other SamplingParams option, value as JSON or text (repeatable), e.g. -p repetition_penalty=1.1.",
        ),
    )
    for option in reversed(options):
        f = option(f)
    return f


def _output_options(f: _F) -> _F:
    f = click.option(
        "--jsonl", is_flag=True, help="Print the stream as JSON lines, one per chunk; the last has the result."
    )(f)
    f = _json_option(f)
    return click.option("--no-stream", is_flag=True, help="Wait for the whole answer instead of streaming it.")(f)


def _sampling_params(
    preset: str | None,
    shortcuts: dict[str, Any],
    extra: tuple[str, ...],
) -> SamplingParams | None:
    """The sampling options of the command line: a preset, then the shortcut options, then -p KEY=VALUE."""
    from zephyr_tgi import SamplingParams

    base = SamplingParams.preset(preset) if preset else None  # type: ignore[arg-type]  # click checked the name
    changes = {key: value for key, value in shortcuts.items() if value not in (None, ())}
    try:
        changes.update(parse_assignments(list(extra)))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'-p' / '--param'") from None
    return merge_sampling(base, changes)


def _output_mode(as_json: bool, jsonl: bool) -> OutputMode:
    if as_json and jsonl:
        raise click.UsageError("choose one of --json and --jsonl")
    return "json" if as_json else "jsonl" if jsonl else "text"


# -- helpers ------------------------------------------------------------------------------------------


def _client(url: tuple[str, ...], api_key: str | None) -> ZephyrClient:
    """A client for --url/--api-key; the other ZEPHYR_TGI_* settings (timeout, attempts) come from the env.

    A URL that ends with a TGI route (`.../generate`, `.../v1`) is cut back to the server's base URL, with a note.
    Several URLs (--url repeated, or comma-separated) make a client of several replicas.
    """
    from zephyr_tgi import ConfigurationError, RetryPolicy, ZephyrClient
    from zephyr_tgi._client.core import settings_from_env

    # click splits ZEPHYR_TGI_URL at whitespace for a repeatable option; commas separate URLs too.
    urls = [part.strip() for value in url for part in value.split(",") if part.strip()]
    if not urls:
        raise ConfigurationError(
            "no server URL: pass --url or set ZEPHYR_TGI_URL (`zephyr-tgi serve` prints it; "
            "`zephyr-tgi emulator` runs a test server)"
        )
    bases = [split_route(u) for u in urls]
    for base in bases:
        if base.note is not None:
            click.echo(base.note, err=True)
    click.get_current_context().meta[_BASE_URL] = bases[0]  # for the hint on a 404, see _fail
    settings: dict[str, Any] = {"base_url": bases[0].url if len(bases) == 1 else [b.url for b in bases]}
    if api_key:
        settings["api_key"] = api_key
    # At a terminal a refused connection means no server at that URL: say so at once instead of retrying.
    retry = settings_from_env(os.environ).get("retry") or RetryPolicy()
    settings["retry"] = retry.model_copy(update={"retry_refused": False})
    return ZephyrClient.from_env(**settings)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _result_json(result: GenerationResult) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude=_BULKY)


def _chunk_json(chunk: StreamChunk) -> dict[str, Any]:
    return chunk.model_dump(mode="json", exclude={"result": _BULKY}, exclude_none=True)


def _print_stream(chunks: Iterator[StreamChunk], mode: OutputMode) -> GenerationResult | None:
    """Print a stream as text (as it arrives), JSON lines, or one final JSON object; the final result."""
    result: GenerationResult | None = None
    for chunk in chunks:
        if mode == "text":
            click.echo(chunk.text, nl=False)
        elif mode == "jsonl":
            _echo_json(_chunk_json(chunk))
        if chunk.result is not None:
            result = chunk.result
    if mode == "text":
        click.echo()
    elif mode == "json" and result is not None:
        _echo_json(_result_json(result))
    return result


def _print_result(result: GenerationResult, mode: OutputMode) -> GenerationResult:
    if mode == "text":
        click.echo(result.text)
    else:
        _echo_json(_result_json(result))
    return result


def _say_if_cut(result: GenerationResult | None) -> None:
    """A cut answer says so on stderr, whatever the output mode (JSON keeps stdout clean; it has finish_reason)."""
    note = cut_note(result, how_to_lengthen="--max-new-tokens N")
    if note is not None:
        click.echo(note, err=True)


def _prompt_words(words: tuple[str, ...]) -> str | None:
    """The PROMPT words joined into one prompt (`chat What is GPTQ` needs no quotes); None when there are none.

    Raises:
        click.UsageError: the prompt is empty (`chat ""`), for `chat` and `generate` alike.
    """
    if not words:
        return None
    prompt = " ".join(words)
    if not prompt.strip():
        raise click.UsageError(_EMPTY_PROMPT)
    return prompt


_EMPTY_PROMPT = "the prompt is empty: pass PROMPT (the words after the command join into one) or pipe it on stdin"


def _read_stdin_prompt() -> str | None:
    """The whole of stdin when it is piped (None on a terminal)."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    return sys.stdin.read()


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...], *, right: Collection[int] = ()) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            str(cell).rjust(widths[i]) if i in right else str(cell).ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    click.echo(line(header))
    for row in rows:
        click.echo(line(row))


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C while serving, so `kill`, a process manager or a closed terminal
    still stop and remove the container in an orderly way (the reaper would, too, a moment later)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals only work on the main thread
        yield
        return
    handled = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, handler) for signum in handled}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


def _server_class() -> type[TGIServer]:
    """The launcher class (a seam: the tests substitute a fake, as they have no Docker to check the wiring with)."""
    from zephyr_tgi import TGIServer

    return TGIServer


# -- the commands -------------------------------------------------------------------------------------


@click.group(
    "zephyr-tgi", cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, "-V", "--version", prog_name="zephyr-tgi")
@_debug_option
def cli() -> None:
    """Chat with Zephyr-7B-alpha GPTQ on text-generation-inference (TGI), and run TGI on a GPU host.

    \b
    zephyr-tgi serve                 start TGI in Docker on this GPU host (prints ZEPHYR_TGI_URL)
    zephyr-tgi chat                  an interactive chat; `chat "question"` for one answer
    zephyr-tgi emulator              a TGI look-alike for trying things without a GPU
    zephyr-tgi ps / down             list / remove zephyr-tgi's containers
    """


cli.add_command(_debug_option(ps))
cli.add_command(_debug_option(down))
cli.add_command(_debug_option(deploy))


@cli.command()
@click.argument("words", metavar="[PROMPT]...", nargs=-1)
@click.option("--system", help="The system prompt.")
@click.option(
    "--load", "load_path", type=click.Path(dir_okay=False, path_type=Path), help="Resume a saved conversation."
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the conversation after the answer (or at the end of the session).",
)
@click.option(
    "--policy",
    type=click.Choice(("drop_oldest", "raise")),
    default="drop_oldest",
    show_default=True,
    help="What to do when the history outgrows the context window.",
)
@click.option("-i", "--interactive", is_flag=True, help="A chat session even when stdin is not a terminal.")
@_sampling_options
@_output_options
@_server_options
@_debug_option
def chat(
    words: tuple[str, ...],
    system: str | None,
    load_path: Path | None,
    save_path: Path | None,
    policy: Literal["drop_oldest", "raise"],
    interactive: bool,
    preset: str | None,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    seed: int | None,
    stop: tuple[str, ...],
    extra: tuple[str, ...],
    no_stream: bool,
    as_json: bool,
    jsonl: bool,
    url: tuple[str, ...],
    api_key: str | None,
) -> None:
    """Chat with the model: one answer to PROMPT, or an interactive session.

    With PROMPT (or text piped on stdin) the answer streams to stdout; the words of PROMPT need no quotes.
    Without either, on a terminal, starts a session: slash commands (/help, /system, /params, /reset, /history,
    /save, /load, /exit), multi-line input (end a line with \\, or wrap text in \"\"\"), and a history kept
    inside the server's context window.
    """
    mode = _output_mode(as_json, jsonl)
    prompt = _prompt_words(words)
    if prompt is None and not interactive:
        prompt = _read_stdin_prompt()
        if prompt is not None and not prompt.strip():
            raise click.UsageError("stdin was empty: pipe a prompt, pass PROMPT, or run in a terminal for a session")
    if prompt is None and mode != "text":
        raise click.UsageError("--json and --jsonl need a PROMPT or piped stdin, not an interactive session")
    params = _sampling_params(
        preset,
        {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
            "stop": stop,
        },
        extra,
    )
    with _client(url, api_key) as client:
        conversation = _conversation(client, load_path, system=system, params=params, policy=policy)
        if prompt is None:
            conversation = _interactive(conversation, url=client.base_url)
        else:
            fitted, lowered = fit_answer_length(conversation, prompt, client.info())
            if lowered is not None:
                click.echo(lowered, err=True)
            overrides: dict[str, Any] = {"max_new_tokens": fitted} if fitted is not None else {}
            if no_stream:
                with notice_if_slow(client.base_url, "the answer"):
                    answer = conversation.ask(prompt, **overrides)
                result: GenerationResult | None = _print_result(answer, mode)
            else:
                stream = conversation.ask_stream(prompt, **overrides)
                result = _print_stream(until_first(stream, client.base_url, "the first token"), mode)
            if conversation.dropped and mode == "text":
                click.echo(f"({dropped_note(conversation.dropped)})", err=True)
            _say_if_cut(result)
        if save_path is not None:
            save_path.write_text(conversation.to_json(), encoding="utf-8")


def _conversation(
    client: ZephyrClient,
    load_path: Path | None,
    *,
    system: str | None,
    params: SamplingParams | None,
    policy: Literal["drop_oldest", "raise"],
) -> Conversation:
    from zephyr_tgi import Conversation

    if load_path is None:
        return Conversation(client, system=system, params=params, policy=policy)
    conversation = Conversation.from_json(load_path.read_text(encoding="utf-8"), client)
    if system is not None:
        conversation.system = system
    if params is not None:
        conversation.params = merge_sampling(conversation.params, params.model_dump(include=params.model_fields_set))
    return conversation


def _interactive(conversation: Conversation, *, url: str) -> Conversation:
    """Run a chat session; returns the conversation it ended with (/load may have replaced the first)."""
    info = conversation.client.info()  # fails fast, in one line, when the server is not there
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # not on every platform; plain input() still works
            import readline  # noqa: F401  # line editing and history for input()
    # The emulator answers like TGI; someone reading its stand-in answers must know they are not the model's.
    emulated = is_emulator(conversation.client.endpoints[0].url)
    stand_in = " (the zephyr-tgi emulator: stand-in answers, not the model's)" if emulated else ""
    click.echo(
        f"Chatting with {info.model_id} at {url}{stand_in}. /help lists commands, Ctrl-D quits. "
        'Multi-line: end a line with \\ or wrap text in """.',
        err=True,
    )
    if conversation.messages:
        click.echo(f"(resuming {len(conversation.messages)} messages)", err=True)
    session = ChatSession(
        conversation,
        read_line=input,
        write=lambda text: click.echo(text, nl=False),
        note=lambda text: click.echo(text, err=True),
        limits=info,
    )
    session.run()
    return session.conversation


@cli.command()
@click.argument("words", metavar="[PROMPT]...", nargs=-1)
@_sampling_options
@_output_options
@_server_options
@_debug_option
def generate(
    words: tuple[str, ...],
    preset: str | None,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    seed: int | None,
    stop: tuple[str, ...],
    extra: tuple[str, ...],
    no_stream: bool,
    as_json: bool,
    jsonl: bool,
    url: tuple[str, ...],
    api_key: str | None,
) -> None:
    """Generate from a raw PROMPT (no chat template; its words need no quotes), or from stdin; streamed."""
    mode = _output_mode(as_json, jsonl)
    prompt = _prompt_words(words)
    if prompt is None:
        prompt = _read_stdin_prompt()
        if prompt is None:
            raise click.UsageError("no prompt: pass PROMPT or pipe it on stdin")
        if not prompt.strip():
            raise click.UsageError("stdin was empty: pipe a prompt or pass PROMPT")
    params = _sampling_params(
        preset,
        {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
            "stop": stop,
        },
        extra,
    )
    with _client(url, api_key) as client:
        if no_stream:
            with notice_if_slow(client.base_url, "the answer"):
                answer = client.generate(prompt, params=params)
            result: GenerationResult | None = _print_result(answer, mode)
        else:
            stream = client.generate_stream(prompt, params=params)
            result = _print_stream(until_first(stream, client.base_url, "the first token"), mode)
    _say_if_cut(result)


@cli.command()
@_json_option
@_server_options
@_debug_option
def info(as_json: bool, url: tuple[str, ...], api_key: str | None) -> None:
    """Show the server's model, version and limits (TGI's /info)."""
    with _client(url, api_key) as client, notice_if_slow(client.base_url, "GET /info"):
        data = {"url": client.base_url, **client.info().model_dump(mode="json")}
    if as_json:
        _echo_json(data)
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        if value is not None:
            click.echo(f"{key.ljust(width)}  {value}")


@cli.command()
@click.option("--wait", type=float, metavar="SECONDS", help="Wait up to SECONDS for the server to become healthy.")
@_json_option
@_server_options
@_debug_option
def health(wait: float | None, as_json: bool, url: tuple[str, ...], api_key: str | None) -> None:
    """Check the server: is it reachable, is it TGI (/info), is it healthy (/health)?

    Exit codes: 0 healthy; 1 TGI answers but is not healthy (still loading, or failing); 3 nothing answers at the
    URL; 4 something answers, but it is not TGI (a wrong port or path, a proxy's error page).
    """
    from zephyr_tgi import APITimeoutError

    with _client(url, api_key) as client:
        if wait is not None:
            with contextlib.suppress(APITimeoutError):  # the verdict below says what it is after the wait
                client.wait_until_ready(timeout=wait)
        diagnosis = diagnose(client)  # with several replicas, its /health probe checked each of them
        base_url = client.base_url
        replicas = client.endpoints if len(client.endpoints) > 1 else ()
    healthy = diagnosis.health is Health.HEALTHY
    hint = _health_hint(diagnosis.health, click.get_current_context().meta.get(_BASE_URL))
    if as_json:
        found = {"url": base_url, "healthy": healthy, "state": str(diagnosis.health), "detail": diagnosis.detail}
        if replicas:
            found["replicas"] = [{"url": r.url, "healthy": r.healthy, "last_error": r.last_error} for r in replicas]
        _echo_json(found | ({"hint": hint} if hint else {}))
    else:
        if healthy:
            click.echo(f"{base_url}: healthy")
        else:
            click.echo(f"{base_url}: {diagnosis.health}: {diagnosis.detail}")
        for replica in replicas:  # healthy when at least one is: say which
            click.echo(f"  {replica.url}: " + ("healthy" if replica.healthy else f"unhealthy ({replica.last_error})"))
        if hint and not healthy:
            click.echo(hint, err=True)
    if not healthy:
        raise click.exceptions.Exit(_HEALTH_EXIT[diagnosis.health])


_HEALTH_EXIT = {Health.UNHEALTHY: 1, Health.UNREACHABLE: 3, Health.NOT_TGI: 4}


def _health_hint(found: Health, base: object) -> str | None:
    if found is Health.NOT_TGI:
        path_hint = wrong_path_hint(base) if isinstance(base, BaseURL) else None
        return path_hint or "hint: is --url (or ZEPHYR_TGI_URL) the address of a TGI server, with the right port?"
    if found is Health.UNREACHABLE:
        return "hint: is the server running (`zephyr-tgi serve`, `zephyr-tgi ps`) and is the host and port right?"
    if found is Health.UNHEALTHY:
        return "hint: a starting TGI is unhealthy until the model is loaded: `zephyr-tgi health --wait 600` waits"
    return None


@cli.command()
@click.argument("text", required=False)
@click.option("--count", is_flag=True, help="Print only the number of tokens.")
@_json_option
@_server_options
@_debug_option
def tokenize(text: str | None, count: bool, as_json: bool, url: tuple[str, ...], api_key: str | None) -> None:
    """Show how the server tokenizes TEXT (or stdin): id, character span and text of each token.

    TGI's /tokenize counts the BOS token `<s>` that every prompt starts with.
    """
    if text is None:
        text = _read_stdin_prompt()
        if text is None:
            raise click.UsageError("no text: pass TEXT or pipe it on stdin")
    with _client(url, api_key) as client:
        spans = client.tokenize(text)
    if count and as_json:
        _echo_json({"count": len(spans)})
    elif count:
        click.echo(len(spans))
    elif as_json:
        _echo_json([span.model_dump(mode="json") for span in spans])
    else:
        _print_table(
            [(str(s.id), f"{s.start}-{s.stop}", json.dumps(s.text, ensure_ascii=False)) for s in spans],
            ("id", "chars", "text"),
            right={0},
        )
        click.echo(f"{len(spans)} tokens", err=True)


@cli.command()
@_json_option
@_debug_option
def variants(as_json: bool) -> None:
    """List the GPTQ branches of TheBloke/zephyr-7B-alpha-GPTQ, with size and VRAM estimates."""
    from zephyr_tgi import VARIANTS

    rows = list(VARIANTS.values())
    if as_json:
        _echo_json([row.model_dump(mode="json") for row in rows])
        return
    _print_table(
        [
            (
                row.branch,
                str(row.bits),
                str(row.group_size) if row.group_size else "none",
                "yes" if row.act_order else "no",
                f"{row.size_gb:.2f}",
                f"{row.estimated_vram_gb:.2f}",
                "yes" if row.exllama_compatible else "no",
            )
            for row in rows
        ],
        ("branch", "bits", "group", "act-order", "size GB", "VRAM GB*", "ExLlama"),
        right={1, 2, 4, 5},
    )
    click.echo(
        "* weights + fp16 KV cache of one 4096-token sequence: a floor; CUDA context and activations add 1-2 GB.",
        err=True,
    )


@cli.command()
@click.option(
    "--engine",
    type=click.Choice(["tgi", "vllm", "sglang"]),
    envvar="ZEPHYR_TGI_ENGINE",
    show_envvar=True,
    help="Which server runs the model, in its pinned image  [default: tgi]",
)
@click.option("--variant", metavar="BRANCH", help="GPTQ branch (`zephyr-tgi variants`)  [default: main]")
@click.option("--gpus", metavar="GPUS", help="all, none, a count, or device ids like 0,1  [default: all]")
@click.option("--port", type=int, help="Host port  [default: a free one, chosen by Docker]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Host address the port is published on.")
@click.option(
    "--api-key", envvar="ZEPHYR_TGI_API_KEY", show_envvar=True, help="Require this api key (TGI's --api-key)."
)
@click.option("--image", help="The TGI image  [default: the pinned TGI release]")
@click.option("--startup-timeout", type=float, metavar="SECONDS", help="How long TGI may take to become ready.")
@click.option("--reuse", is_flag=True, help="Attach to a running container with the same settings, if any.")
@click.option("--detach", is_flag=True, help="Leave the server running and exit once it is ready.")
@click.option("--skip-gpu-check", is_flag=True, help="Start even though `docker info` lists no NVIDIA runtime.")
@click.option("--logs", "show_logs", is_flag=True, help="Print TGI's log lines while serving.")
@_json_option
@_debug_option
def serve(
    engine: str | None,
    variant: str | None,
    gpus: str | None,
    port: int | None,
    host: str,
    api_key: str | None,
    image: str | None,
    startup_timeout: float | None,
    reuse: bool,
    detach: bool,
    skip_gpu_check: bool,
    show_logs: bool,
    as_json: bool,
) -> None:
    """Run TGI serving Zephyr-7B-alpha GPTQ in Docker on this GPU host, until Ctrl-C.

    Shows progress while the image is pulled and the model loads, then prints `export ZEPHYR_TGI_URL=...` on
    stdout (so `eval "$(zephyr-tgi serve --detach)"` works). Ctrl-C, SIGTERM, SIGHUP, or this process dying
    any other way stops and removes the container; with --detach it keeps running once ready (`zephyr-tgi down
    NAME` removes it). Other settings come from the ZEPHYR_TGI_VARIANT, ZEPHYR_TGI_IMAGE, ZEPHYR_TGI_GPUS,
    HF_TOKEN and HF_HOME variables.
    """
    chosen = {"engine": engine, "variant": variant, "gpus": gpus, "port": port, "api_key": api_key, "image": image}
    settings: dict[str, Any] = {key: value for key, value in chosen.items() if value is not None}
    if startup_timeout is not None:
        settings["startup_timeout"] = startup_timeout
    progress = _StartProgress()
    with warnings.catch_warnings(record=True) as caught:  # e.g. "published beyond loopback without an api key"
        warnings.simplefilter("always")
        server = _server_class().from_env(
            host=host,
            reuse=reuse,
            keep=detach,
            check_gpu_runtime=not skip_gpu_check,
            messages_for="cli",
            progress=progress,
            **settings,
        )
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    with _sigterm_as_interrupt():
        try:
            server.start()
        finally:
            progress.close()
        if as_json:
            _echo_json({"url": server.url, "container_id": server.container_id, "detached": detach})
        else:
            click.echo(f"export ZEPHYR_TGI_URL={server.url}")
            if server.config.engine != "tgi":
                click.echo(f"export ZEPHYR_TGI_ENGINE={server.config.engine}")
        if server.config.api_key is not None:
            click.echo("The server requires the api key you gave: set ZEPHYR_TGI_API_KEY for clients too.", err=True)
        if detach:
            container = server.container_id
            click.echo(
                f"Detached: container {container} keeps running; `zephyr-tgi down {container}` removes it.",
                err=True,
            )
            return
        click.echo(f"Serving at {server.url}; press Ctrl-C to stop and remove the container.", err=True)
        interrupted = False
        try:
            for line in server.logs(follow=True, tail=0):  # ends when the container stops
                if show_logs:
                    click.echo(line, err=True)
        except KeyboardInterrupt:
            interrupted = True
            click.echo(f"\nStopping and removing the container {server.container_id} ...", err=True)
        finally:
            server.stop()
    if not interrupted:
        from zephyr_tgi import ServerError

        raise ServerError("the TGI container stopped on its own (rerun with --logs to see its log lines)")
    click.echo("Stopped.", err=True)


class _StartProgress:
    """Start-up progress for `serve`: a tqdm bar over the stages on a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        from zephyr_tgi import Stage

        self._stages = [str(stage) for stage in Stage]  # in the order a start goes through them
        self._bar: Any = None
        self._tty = sys.stderr.isatty()

    def __call__(self, event: ProgressEvent) -> None:
        stage = str(event.stage)
        detail = f" {(event.current or 0) / 1e9:.2f}/{event.total / 1e9:.2f} GB" if event.total else ""
        if not self._tty:
            click.echo(f"[zephyr-tgi] {stage}: {event.message}{detail}", err=True)
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(self._stages),
                file=sys.stderr,
                bar_format="{desc:<12} {bar:20} {n_fmt}/{total_fmt} [{elapsed}] {postfix}",
                dynamic_ncols=True,
            )
        position = self._stages.index(stage) + 1 if stage in self._stages else self._bar.n
        self._bar.n = position
        self._bar.set_description_str(stage, refresh=False)
        self._bar.set_postfix_str(f"{event.message}{detail}"[:80], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--api-key", help="Require this api key (TGI's --api-key).")
@click.option(
    "--replies",
    "replies_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON object of canned replies: {prompt or last user message: reply}.",
)
@click.option("--seed", type=int, help="Salt for the deterministic stand-in replies.")
@click.option("--max-input-tokens", type=int, default=3696, show_default=True, help="The input window.")
@click.option("--max-total-tokens", type=int, default=4096, show_default=True, help="Input + answer window.")
@click.option("--enable-prefill-logprobs", is_flag=True, help="Return prompt logprobs (needed for perplexity).")
@click.option("--token-latency", type=float, default=0.0, metavar="SECONDS", help="Delay between tokens.")
@click.option(
    "--first-token-latency", type=float, default=0.0, metavar="SECONDS", help="Extra delay before the first token."
)
@click.option(
    "--refuse-for", type=float, default=0.0, metavar="SECONDS", help="Refuse connections at first (a loading model)."
)
@click.option("--unavailable-for", type=float, default=0.0, metavar="SECONDS", help="Answer 503 at first.")
@click.option(
    "--overload-next", type=int, default=0, metavar="N", help="Answer the next N generations with 429 overloaded."
)
@click.option("--retry-after", metavar="VALUE", help="A Retry-After header for 429 and 503 answers.")
@click.option(
    "--drop-mid-stream-next", type=int, default=0, metavar="N", help="Cut the next N streams after a few tokens."
)
@click.option(
    "--stream-error-next",
    type=int,
    default=0,
    metavar="N",
    help="Fail the next N generations with --stream-error-type.",
)
@click.option("--stream-error-type", default="generation", show_default=True, help="TGI error_type of those failures.")
@click.option(
    "--engine",
    type=click.Choice(["tgi", "vllm", "sglang"]),
    default="tgi",
    show_default=True,
    help="Whose API to speak: TGI's, vLLM's or SGLang's (routes, error bodies, streams).",
)
@_json_option
@_debug_option
def emulator(
    host: str,
    port: int,
    api_key: str | None,
    replies_path: Path | None,
    seed: int | None,
    max_input_tokens: int,
    max_total_tokens: int,
    enable_prefill_logprobs: bool,
    token_latency: float,
    first_token_latency: float,
    refuse_for: float,
    unavailable_for: float,
    overload_next: int,
    retry_after: str | None,
    drop_mid_stream_next: int,
    stream_error_next: int,
    stream_error_type: str,
    engine: str,
    as_json: bool,
) -> None:
    """Run zephyr_tgi's TGI emulator until Ctrl-C: TGI's API with deterministic stand-in answers, no GPU.

    The fault options make it misbehave like a real deployment does, to try retries and error handling. The full
    set of knobs (and TGI's launcher flags) is in `python -m zephyr_tgi.testing --help`; docs/testing.md.
    """
    server = build_emulator(
        host=host,
        port=port,
        api_key=api_key,
        replies=_load_replies(replies_path) if replies_path else None,
        seed=seed,
        max_input_tokens=max_input_tokens,
        max_total_tokens=max_total_tokens,
        enable_prefill_logprobs=enable_prefill_logprobs,
        faults={
            "token_latency": token_latency,
            "first_token_latency": first_token_latency,
            "refuse_connections_for": refuse_for,
            "unavailable_for": unavailable_for,
            "overload_next": overload_next,
            "retry_after": retry_after,
            "drop_mid_stream_next": drop_mid_stream_next,
            "stream_error_next": stream_error_next,
            "stream_error_type": stream_error_type,
        },
        engine=engine,
    )
    with _sigterm_as_interrupt():
        try:
            server.start()
        except OSError as exc:
            raise OSError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port 0 picks a free port)"
            ) from exc
        try:
            if as_json:
                _echo_json(
                    {
                        "url": server.url,
                        "port": server.port,
                        "api_key_required": api_key is not None,
                        "engine": engine,
                    }
                )
            else:
                click.echo(f"export ZEPHYR_TGI_URL={server.url}")
            speaks = {"tgi": "TGI", "vllm": "vLLM", "sglang": "SGLang"}[engine]
            click.echo(
                f"{speaks} emulator serving at {server.url} (deterministic stand-in answers, not Zephyr's). "
                "Ctrl-C stops it.",
                err=True,
            )
            threading.Event().wait()  # until Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            click.echo("\nStopped.", err=True)
        finally:
            server.stop()


def build_emulator(
    *,
    host: str,
    port: int,
    api_key: str | None,
    replies: dict[str, str] | None,
    seed: int | None,
    max_input_tokens: int,
    max_total_tokens: int,
    enable_prefill_logprobs: bool,
    faults: dict[str, Any],
    engine: str = "tgi",
) -> TGIEmulator:
    """The emulator the `emulator` command runs (not started).

    Raises:
        click.BadParameter: limits or fault values the emulator refuses.
    """
    from zephyr_tgi.testing import Faults, TGIEmulator

    try:
        # Faults go through set_faults(), which checks them (types, no negative durations or counts).
        emu = TGIEmulator(
            host=host,
            port=port,
            api_key=api_key,
            replies=replies,
            sampling_seed=seed,
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            enable_prefill_logprobs=enable_prefill_logprobs,
            faults=Faults(),
            engine=engine,
        )
        emu.set_faults(**{key: value for key, value in faults.items() if value is not None})
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return emu


def _load_replies(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}", param_hint="--replies") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise click.BadParameter(f"{path} must hold a JSON object of strings", param_hint="--replies")
    return data


cli.add_command(bench_command)


def main(argv: list[str] | None = None) -> int:
    """The console script `zephyr-tgi`."""
    try:
        cli.main(args=argv, prog_name="zephyr-tgi")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
