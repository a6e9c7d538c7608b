"""`python -m zephyr_tgi.testing`: the emulator behind TGI's launcher flags and TGI-like log lines."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ._emulator import TGIEmulator
from ._faults import DEFAULT_EXIT_MESSAGE, Faults
from ._logs import (
    ARGS_LINE,
    CONNECTED_LINE,
    DOWNLOAD_LINE,
    DOWNLOADED_LINE,
    LISTENING_LINE,
    RUNTIME_LINE,
    SHARD_FAILED_LINE,
    SHARD_READY_LINE,
    SHARD_START_LINE,
    SHARD_STDERR_LINE,
    SHUTDOWN_LINE,
    SIGNAL_LINE,
    TERMINATED_LINE,
    TERMINATING_LINE,
    UNKNOWN_ARGS_LINE,
    WARMUP_LINE,
    WEBSERVER_LINE,
)
from ._performance import PerformanceModel
from ._tokenizer import EmulatorTokenizer, SentencePieceTokenizer

__all__ = ["main", "parse_arguments"]

DEFAULT_MODEL_ID = "TheBloke/zephyr-7B-alpha-GPTQ"

_TRUE = frozenset({"true", "1", "yes", "on", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "f", ""})


class ArgumentValidationError(Exception):
    """An argument problem the launcher reports as `Error: ArgumentValidation(...)`, exit 1."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


@dataclass(frozen=True, slots=True)
class _Option:
    """One flag: clap-style resolution is flag value, else env var, else default."""

    dest: str
    flags: tuple[str, ...]
    env: str | None
    convert: Callable[[str], Any]
    default: Any = None
    switch: bool = False
    negatable: bool = False


def _emulator_env(name: str) -> str:
    return f"ZEPHYR_TGI_EMULATOR_{name}"


_OPTIONS: tuple[_Option, ...] = (
    _Option("model_id", ("--model-id",), "MODEL_ID", str, DEFAULT_MODEL_ID),
    _Option("revision", ("--revision",), "REVISION", str),
    _Option("quantize", ("--quantize",), "QUANTIZE", str),
    _Option("max_input_tokens", ("--max-input-tokens",), "MAX_INPUT_TOKENS", int),
    _Option("max_input_length", ("--max-input-length",), "MAX_INPUT_LENGTH", int),
    _Option("max_total_tokens", ("--max-total-tokens",), "MAX_TOTAL_TOKENS", int),
    _Option("max_batch_prefill_tokens", ("--max-batch-prefill-tokens",), "MAX_BATCH_PREFILL_TOKENS", int),
    _Option("max_concurrent_requests", ("--max-concurrent-requests",), "MAX_CONCURRENT_REQUESTS", int, 128),
    _Option("max_best_of", ("--max-best-of",), "MAX_BEST_OF", int, 2),
    _Option("max_stop_sequences", ("--max-stop-sequences",), "MAX_STOP_SEQUENCES", int, 4),
    _Option("max_top_n_tokens", ("--max-top-n-tokens",), "MAX_TOP_N_TOKENS", int, 5),
    _Option("max_client_batch_size", ("--max-client-batch-size",), "MAX_CLIENT_BATCH_SIZE", int, 4),
    # Docker sets HOSTNAME to the container id, so only the explicit flag counts.
    _Option("hostname", ("--hostname",), None, str, "0.0.0.0"),
    _Option("port", ("--port", "-p"), "PORT", int, 3000),
    _Option("api_key", ("--api-key",), "API_KEY", str),
    _Option("tokenizer_config_path", ("--tokenizer-config-path",), "TOKENIZER_CONFIG_PATH", str),
    _Option("usage_stats", ("--usage-stats",), "USAGE_STATS", str, "on"),
    _Option("num_shard", ("--num-shard",), "NUM_SHARD", int),
    _Option("sharded", ("--sharded",), "SHARDED", _bool),
    _Option("enable_prefill_logprobs", ("--enable-prefill-logprobs",), "ENABLE_PREFILL_LOGPROBS", _bool, False, True),
    _Option("disable_grammar_support", ("--disable-grammar-support",), "DISABLE_GRAMMAR_SUPPORT", _bool, False, True),
    _Option("json_output", ("--json-output",), "JSON_OUTPUT", _bool, False, True),
    _Option("trust_remote_code", ("--trust-remote-code",), "TRUST_REMOTE_CODE", _bool, False, True),
    _Option("env", ("--env", "-e"), None, _bool, False, True),
    _Option(
        "emulator_chat_template",
        ("--emulator-chat-template",),
        _emulator_env("CHAT_TEMPLATE"),
        _bool,
        True,
        True,
        True,
    ),
    # Which engine's API the image speaks: tgi (default), vllm or sglang (same port, same knobs).
    _Option("emulator_engine", ("--emulator-engine",), _emulator_env("ENGINE"), str, "tgi"),
    _Option("emulator_token_latency", ("--emulator-token-latency",), _emulator_env("TOKEN_LATENCY"), float, 0.0),
    _Option(
        "emulator_first_token_latency",
        ("--emulator-first-token-latency",),
        _emulator_env("FIRST_TOKEN_LATENCY"),
        float,
        0.0,
    ),
    _Option("emulator_refuse_for", ("--emulator-refuse-for",), _emulator_env("REFUSE_FOR"), float, 0.0),
    _Option("emulator_unavailable_for", ("--emulator-unavailable-for",), _emulator_env("UNAVAILABLE_FOR"), float, 0.0),
    _Option(
        "emulator_proxy_unavailable_for",
        ("--emulator-proxy-unavailable-for",),
        _emulator_env("PROXY_UNAVAILABLE_FOR"),
        float,
        0.0,
    ),
    _Option("emulator_exit_after", ("--emulator-exit-after",), _emulator_env("EXIT_AFTER"), float),
    _Option("emulator_exit_code", ("--emulator-exit-code",), _emulator_env("EXIT_CODE"), int, 1),
    _Option(
        "emulator_exit_message",
        ("--emulator-exit-message",),
        _emulator_env("EXIT_MESSAGE"),
        str,
        DEFAULT_EXIT_MESSAGE,
    ),
    _Option("emulator_replies", ("--emulator-replies",), _emulator_env("REPLIES"), str),
    _Option("emulator_seed", ("--emulator-seed",), _emulator_env("SEED"), int),
    _Option("tokenizer_model", ("--tokenizer-model",), _emulator_env("TOKENIZER_MODEL"), str),
    # The performance model (_performance.py): on with --emulator-performance or any of its knobs.
    _Option("emulator_performance", ("--emulator-performance",), _emulator_env("PERFORMANCE"), _bool, False, True),
    _Option("max_batch_total_tokens", ("--max-batch-total-tokens",), "MAX_BATCH_TOTAL_TOKENS", int),
    _Option("emulator_prefill_base", ("--emulator-prefill-base",), _emulator_env("PREFILL_BASE"), float),
    _Option("emulator_prefill_per_token", ("--emulator-prefill-per-token",), _emulator_env("PREFILL_PER_TOKEN"), float),
    _Option("emulator_decode_step", ("--emulator-decode-step",), _emulator_env("DECODE_STEP"), float),
    _Option(
        "emulator_decode_step_per_sequence",
        ("--emulator-decode-step-per-sequence",),
        _emulator_env("DECODE_STEP_PER_SEQUENCE"),
        float,
    ),
)

_PERFORMANCE_KNOBS = {
    "max_batch_total_tokens": "max_batch_total_tokens",
    "emulator_prefill_base": "prefill_base",
    "emulator_prefill_per_token": "prefill_per_token",
    "emulator_decode_step": "decode_step_base",
    "emulator_decode_step_per_sequence": "decode_step_per_sequence",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zephyr_tgi.testing",
        description="A TGI emulator that accepts text-generation-launcher flags (unknown ones are ignored).",
        allow_abbrev=False,
    )
    for option in _OPTIONS:
        env_note = f" [env: {option.env}]" if option.env else ""
        help_text = f"default: {option.default!r}{env_note}"
        if option.negatable:
            parser.add_argument(
                *option.flags, dest=option.dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif option.switch:
            parser.add_argument(*option.flags, dest=option.dest, action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(
                *option.flags, dest=option.dest, default=None, metavar=option.dest.upper(), help=help_text
            )
    return parser


def parse_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Resolve every option (flag > env > default); returns (values, unknown arguments)."""
    parser = _parser()
    namespace, unknown = parser.parse_known_args(list(argv))
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(namespace, option.dest)
        source = option.flags[0]
        if raw is None and option.env is not None and option.env in environ:
            raw = environ[option.env]
            source = option.env
        if raw is None:
            values[option.dest] = option.default
        elif isinstance(raw, bool):
            values[option.dest] = raw
        else:
            try:
                values[option.dest] = option.convert(raw)
            except ValueError:
                parser.error(f"invalid value {raw!r} for {source}")
    return values, unknown


def _resolve_limits(values: Mapping[str, Any]) -> tuple[int, int]:
    """max_input_tokens / max_total_tokens the way the launcher settles them."""
    max_input = values["max_input_tokens"]
    legacy = values["max_input_length"]
    if max_input is not None and legacy is not None:
        raise ArgumentValidationError(
            f"Both `max_input_tokens` ({max_input}) and `max_input_length` ({legacy}) are set. Please define only "
            "`max_input_tokens` as `max_input_length is deprecated for naming consistency."
        )
    max_input = max_input if max_input is not None else legacy
    max_total = values["max_total_tokens"]
    if max_input is None and max_total is None:
        max_input, max_total = 3696, 4096
    elif max_input is None:
        max_input = max_total - 1
    elif max_total is None:
        max_total = max(4096, max_input + 1)
    if max_input >= max_total:
        raise ArgumentValidationError(f"`max_input_tokens`({max_input}) must be < `max_total_tokens`({max_total})")
    prefill = values["max_batch_prefill_tokens"]
    if prefill is not None and prefill < max_input:
        raise ArgumentValidationError(
            f"`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: {prefill} and {max_input}"
        )
    return max_input, max_total


def _performance_model(values: Mapping[str, Any]) -> PerformanceModel | None:
    """The performance model the flags ask for, or None when none of them is given."""
    knobs = {field: values[dest] for dest, field in _PERFORMANCE_KNOBS.items() if values[dest] is not None}
    if not knobs and not values["emulator_performance"]:
        return None
    try:
        return PerformanceModel(**knobs)
    except ValueError as exc:
        raise ArgumentValidationError(str(exc)) from None


def _load_replies(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArgumentValidationError(f"cannot read --emulator-replies {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ArgumentValidationError(f"--emulator-replies {path} must hold a JSON object of strings")
    return data


def _check_tokenizer_config(path: str | None) -> None:
    if path is None:
        return
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArgumentValidationError(f"cannot read --tokenizer-config-path {path}: {exc}") from None
    if not isinstance(data, dict) or not data.get("chat_template"):
        raise ArgumentValidationError(f"--tokenizer-config-path {path} has no `chat_template`")


def _load_tokenizer(path: str | None) -> EmulatorTokenizer | None:
    if path is None:
        return None
    try:
        return SentencePieceTokenizer(path)
    except (OSError, ImportError, RuntimeError) as exc:
        raise ArgumentValidationError(f"cannot load --tokenizer-model {path}: {exc}") from None


def _json_record(timestamp: str, level: str, text: str) -> dict[str, Any]:
    """tracing-subscriber's JSON layout: leading "span: target: file:line: " parts become fields."""
    parts = text.split(": ")
    prefix: list[str] = []
    while len(parts) > 1 and " " not in parts[0]:
        prefix.append(parts.pop(0))
    message = ": ".join(parts)
    targets = [part for part in prefix if "/" not in part]
    record: dict[str, Any] = {
        "timestamp": timestamp,
        "level": level,
        "fields": {"message": message},
        "target": targets[-1] if targets else "",
    }
    if len(targets) > 1:
        record["span"] = {"name": targets[0]}
    return record


class _Log:
    """TGI-style log lines (tracing's text format, or JSON with --json-output), flushed at once."""

    def __init__(self, json_output: bool, out: TextIO, err: TextIO) -> None:
        self._json = json_output
        self._out = out
        self._err = err

    def line(self, template: str, *, stream: TextIO | None = None, **fields: Any) -> None:
        """Emit one of LOG_LINES formatted with `fields`."""
        level, _, rest = template.partition(" ")
        text = rest.format(**fields)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rendered = json.dumps(_json_record(now, level, text)) if self._json else f"{now} {level:>5} {text}"
        target_stream = stream or self._out
        print(rendered, file=target_stream, flush=True)

    def raw_error(self, text: str) -> None:
        """A line on stderr as is (what a crashing shard or the launcher's `main` prints)."""
        print(text, file=self._err, flush=True)


def _args_debug(values: Mapping[str, Any], max_input: int, max_total: int) -> str:
    """A Rust-Debug-looking rendering of the launcher arguments (the API key is masked)."""

    def option(value: Any) -> str:
        if value is None:
            return "None"
        return f'Some("{value}")' if isinstance(value, str) else f"Some({value})"

    parts = [
        f'model_id: "{values["model_id"]}"',
        f"revision: {option(values['revision'])}",
        "validation_workers: 2",
        f"sharded: {option(values['sharded'])}",
        f"num_shard: {option(values['num_shard'])}",
        f"quantize: {option(values['quantize'])}",
        f"trust_remote_code: {str(values['trust_remote_code']).lower()}",
        f"max_concurrent_requests: {values['max_concurrent_requests']}",
        f"max_best_of: {values['max_best_of']}",
        f"max_stop_sequences: {values['max_stop_sequences']}",
        f"max_top_n_tokens: {values['max_top_n_tokens']}",
        f"max_input_tokens: Some({max_input})",
        f"max_total_tokens: Some({max_total})",
        f"max_batch_prefill_tokens: {option(values['max_batch_prefill_tokens'])}",
        f'hostname: "{values["hostname"]}"',
        f"port: {values['port']}",
        f"json_output: {str(values['json_output']).lower()}",
        "api_key: " + ("None" if values["api_key"] is None else 'Some("<redacted>")'),
        f"tokenizer_config_path: {option(values['tokenizer_config_path'])}",
        f"disable_grammar_support: {str(values['disable_grammar_support']).lower()}",
        f"env: {str(values['env']).lower()}",
        f"max_client_batch_size: {values['max_client_batch_size']}",
        f"usage_stats: {str(values['usage_stats']).capitalize()}",
        f"enable_prefill_logprobs: {str(values['enable_prefill_logprobs']).lower()}",
    ]
    return "{ " + ", ".join(parts) + " }"


async def _run(values: Mapping[str, Any], emulator: TGIEmulator | None, log: _Log) -> int:
    """The async part: wait or crash (exit_after), otherwise serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    exit_after = values["emulator_exit_after"]
    if emulator is None:
        try:
            await asyncio.wait_for(stop.wait(), exit_after)
        except TimeoutError:
            log.raw_error(values["emulator_exit_message"])
            log.line(SHARD_STDERR_LINE, stream=sys.stderr, message=values["emulator_exit_message"])
            log.line(SHARD_FAILED_LINE)
            log.line(SHUTDOWN_LINE)
            log.raw_error("Error: ShardCannotStart")
            code: int = values["emulator_exit_code"]
            return code
        log.line(SHUTDOWN_LINE)
        return 0

    def on_listening(_url: str) -> None:
        log.line(CONNECTED_LINE)
        log.line(LISTENING_LINE, url=f"http://{values['hostname']}:{emulator.port}")

    emulator.on_listening = on_listening
    server = asyncio.create_task(emulator.serve_forever())
    stopper = asyncio.create_task(stop.wait())
    done, _pending = await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        log.line(SIGNAL_LINE)
        log.line(TERMINATING_LINE)
        emulator.stop()
        await server
        log.line(TERMINATED_LINE)
        log.line(SHUTDOWN_LINE)
        return 0
    stopper.cancel()
    server.result()
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    started = time.monotonic()
    env = os.environ if environ is None else environ
    values, unknown = parse_arguments(sys.argv[1:] if argv is None else argv, env)
    log = _Log(bool(values["json_output"]), sys.stdout, sys.stderr)
    try:
        max_input, max_total = _resolve_limits(values)
        _check_tokenizer_config(values["tokenizer_config_path"])
        replies = _load_replies(values["emulator_replies"])
        tokenizer = _load_tokenizer(values["tokenizer_model"])
        performance = _performance_model(values)
    except ArgumentValidationError as exc:
        log.raw_error(f"Error: ArgumentValidation({json.dumps(str(exc))})")
        return 1
    log.line(ARGS_LINE, args=_args_debug(values, max_input, max_total))
    if values["env"]:
        log.line(
            RUNTIME_LINE, runtime=f"Python {platform.python_version()} on {platform.platform()}; zephyr_tgi emulator"
        )
    if unknown:
        log.line(UNKNOWN_ARGS_LINE, arguments=" ".join(unknown))
    model_id = values["model_id"]
    log.line(DOWNLOAD_LINE, model_id=model_id)
    log.line(DOWNLOADED_LINE, model_id=model_id)
    log.line(SHARD_START_LINE)
    log.line(SHARD_READY_LINE, seconds=f"{max(time.monotonic() - started, 0.1):.1f}")
    log.line(WEBSERVER_LINE)
    log.line(WARMUP_LINE)
    emulator: TGIEmulator | None = None
    if values["emulator_exit_after"] is None:
        faults = Faults(
            refuse_connections_for=values["emulator_refuse_for"],
            unavailable_for=values["emulator_unavailable_for"],
            proxy_unavailable_for=values["emulator_proxy_unavailable_for"],
            first_token_latency=values["emulator_first_token_latency"],
            exit_code=values["emulator_exit_code"],
            exit_message=values["emulator_exit_message"],
        )
        try:
            emulator = TGIEmulator(
                host=values["hostname"],
                port=values["port"],
                model_id=model_id,
                revision=values["revision"] or "main",
                api_key=values["api_key"],
                max_input_tokens=max_input,
                max_total_tokens=max_total,
                max_concurrent_requests=values["max_concurrent_requests"],
                max_best_of=values["max_best_of"],
                max_stop_sequences=values["max_stop_sequences"],
                max_top_n_tokens=values["max_top_n_tokens"],
                max_client_batch_size=values["max_client_batch_size"],
                replies=replies,
                token_latency=values["emulator_token_latency"],
                enable_prefill_logprobs=values["enable_prefill_logprobs"],
                chat_template=values["emulator_chat_template"] or values["tokenizer_config_path"] is not None,
                grammar_support=not values["disable_grammar_support"],
                tokenizer=tokenizer,
                faults=faults,
                sampling_seed=values["emulator_seed"],
                performance=performance,
                engine=values["emulator_engine"],
            )
        except ValueError as exc:
            log.raw_error(f"Error: ArgumentValidation({json.dumps(str(exc))})")
            return 1
    try:
        return asyncio.run(_run(values, emulator, log))
    except OSError as exc:
        log.raw_error(f"Error: WebserverFailed: {exc}")
        return 1
