"""Typed request bodies: TGI's GenerateRequest, ChatRequest and CompletionRequest as serde decodes them."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ._json_body import BodyError, Duplicates, Path, ScanError, Scanner, location_after, read_json_body
from ._tools import ToolChoice, ToolSpec

__all__ = [
    "BodyError",
    "ChatRequest",
    "CompletionRequest",
    "GenerateParameters",
    "GenerateRequest",
    "Grammar",
    "parse_chat_request",
    "parse_completion_request",
    "parse_generate_request",
    "read_json_body",
]

_DATA_PREFIX = "Failed to deserialize the JSON body into the target type: "
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_I32 = (-(2**31), 2**31 - 1)
_GRAMMAR_VARIANTS = "`json`, `json_object`, `regex`, `json_schema`"


@dataclass(slots=True)
class Grammar:
    """`GrammarType`: kind is "json" (alias json_object), "regex" or "json_schema"."""

    kind: str
    value: Any


@dataclass(slots=True)
class GenerateParameters:
    """TGI's `GenerateParameters` with serde's defaults for a present `parameters` object."""

    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: list[str] = field(default_factory=list)
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: Grammar | None = None
    adapter_id: str | None = None


@dataclass(slots=True)
class GenerateRequest:
    """`GenerateRequest` / `CompatGenerateRequest` (stream only on POST /)."""

    inputs: str
    parameters: GenerateParameters
    stream: bool = False
    add_special_tokens: bool = True
    reply: str | None = None
    """What the stand-in model writes regardless of the prompt (tool calls); never read from the wire."""


@dataclass(slots=True)
class ChatRequest:
    """The fields of TGI's `ChatRequest` the emulator uses."""

    model: str | None
    messages: list[tuple[str, str]]
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    max_tokens: int | None = None
    presence_penalty: float | None = None
    stop: list[str] | None = None
    stream: bool = False
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolSpec] | None = None
    tool_prompt: str | None = None
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice("auto"))
    response_format: Grammar | None = None
    include_usage: bool = False
    tool_call_ids: list[str] = field(default_factory=list)
    """Ids of the tool calls in earlier assistant messages (for the next call's id)."""
    last_message_has_content: bool = True
    """False when the last message is a tool-call message, which the tool prompt is not appended to."""


@dataclass(slots=True)
class CompletionRequest:
    """The fields of TGI's `CompletionRequest` the emulator uses."""

    model: str | None
    prompts: list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    seed: int | None = None
    suffix: str | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None


# --- typed extraction with serde-style errors ----------------------------------------------------------


def _unexpected(value: Any) -> str:
    """serde's `Unexpected` rendering of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        rendered = f"{int(value)}.0" if value.is_integer() and abs(value) < 1e16 else repr(value)
        return f"floating point `{rendered}`"
    if isinstance(value, str):
        return "string " + json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "sequence"
    return "map"


def _path_text(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Decoder:
    """Pulls typed fields out of parsed JSON and raises 422 rejections that read like serde's."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._spans: dict[Path, tuple[int, int]] | None = None
        self._repeats: dict[tuple[Path, str], int] | None = None

    def _span(self, path: Path) -> tuple[int, int]:
        if self._spans is None:
            scanner = Scanner(self._text, trailing_ok=True)
            with contextlib.suppress(ScanError):
                scanner.scan()
            self._spans = scanner.spans
            self._repeats = scanner.repeats
        return self._spans.get(path, (len(self._text), len(self._text)))

    def fail(self, path: Path, message: str, *, at: int) -> NoReturn:
        """Raise the 422 rejection for `message` reported at character `at`."""
        prefix = _path_text(path)
        located = message + location_after(self._text, max(0, min(at, len(self._text))))
        raise BodyError(422, _DATA_PREFIX + (f"{prefix}: " if prefix else "") + located)

    def fail_value(self, path: Path, value: Any, message: str) -> NoReturn:
        """Report at the value: after a scalar, at the opening bracket of a container."""
        start, end = self._span(path)
        self.fail(path, message, at=start + 1 if isinstance(value, dict | list) else end)

    def invalid_type(self, path: Path, value: Any, expected: str) -> NoReturn:
        """serde's `invalid type: ..., expected ...`."""
        self.fail_value(path, value, f"invalid type: {_unexpected(value)}, expected {expected}")

    def missing(self, path: Path, name: str) -> NoReturn:
        """serde's `missing field` reported at the end of the enclosing object."""
        self.fail_at_end(path, f"missing field `{name}`")

    def fail_at_end(self, path: Path, message: str) -> NoReturn:
        """An error the struct's visitor raises once the whole object is read (serde_json then eats `}`)."""
        _start, end = self._span(path)
        self.fail(path, message, at=end)

    def struct(self, path: Path, value: Any, name: str, fields: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A JSON object for a Rust struct; a repeated field among `fields` is serde's `duplicate field`."""
        if not isinstance(value, dict):
            self.invalid_type(path, value, f"struct {name}")
        if isinstance(value, Duplicates):
            for key in value.repeated:
                if key in fields:
                    self._span(path)
                    assert self._repeats is not None
                    self.fail(path, f"duplicate field `{key}`", at=self._repeats.get((path, key), len(self._text)))
        return value

    def string(self, path: Path, value: Any, *, optional: bool = False) -> Any:
        """A String (or Option<String>)."""
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.invalid_type(path, value, "a string")
        return value

    def boolean(self, path: Path, value: Any, *, optional: bool = False) -> Any:
        """A bool (or Option<bool>)."""
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            self.invalid_type(path, value, "a boolean")
        return value

    def integer(self, path: Path, value: Any, rust: str, *, optional: bool = True) -> Any:
        """An integer of Rust type `rust` (u32, u64, usize, i32)."""
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.invalid_type(path, value, rust)
        low, high = _I32 if rust == "i32" else (0, _U32_MAX if rust == "u32" else _U64_MAX)
        if not low <= value <= high:
            self.fail_value(path, value, f"invalid value: integer `{value}`, expected {rust}")
        return value

    def f32(self, path: Path, value: Any) -> float | None:
        """An Option<f32>."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.invalid_type(path, value, "f32")
        return float(value)

    def strings(self, path: Path, value: Any, *, optional: bool = False) -> list[str] | None:
        """A Vec<String> (or Option<Vec<String>>)."""
        if value is None and optional:
            return None
        if not isinstance(value, list):
            self.invalid_type(path, value, "a sequence")
        return [self.string((*path, index), item) for index, item in enumerate(value)]

    def grammar(self, path: Path, value: Any) -> Grammar | None:
        """An Option<GrammarType> (adjacently tagged: `type` + `value`)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.invalid_type(path, value, "adjacently tagged enum GrammarType")
        if "type" not in value:
            self.missing(path, "type")
        tag = value["type"]
        if not isinstance(tag, str):
            self.invalid_type((*path, "type"), tag, "variant identifier")
        kind = {"json": "json", "json_object": "json", "regex": "regex", "json_schema": "json_schema"}.get(tag)
        if kind is None:
            self.fail_value((*path, "type"), tag, f"unknown variant `{tag}`, expected one of {_GRAMMAR_VARIANTS}")
        if "value" not in value:
            self.missing(path, "value")
        content = value["value"]
        if kind == "regex":
            self.string((*path, "value"), content)
        elif kind == "json_schema":
            config = self.struct((*path, "value"), content, "JsonSchemaConfig")
            if "schema" not in config:
                self.missing((*path, "value"), "schema")
            self.string((*path, "value", "name"), config.get("name"), optional=True)
        return Grammar(kind, content)


_PARAMETER_FIELDS = (
    "best_of",
    "temperature",
    "repetition_penalty",
    "frequency_penalty",
    "top_k",
    "top_p",
    "typical_p",
    "do_sample",
    "max_new_tokens",
    "return_full_text",
    "stop",
    "truncate",
    "watermark",
    "details",
    "decoder_input_details",
    "seed",
    "top_n_tokens",
    "grammar",
    "adapter_id",
)
_GENERATE_FIELDS = frozenset({"inputs", "parameters"})
_COMPAT_FIELDS = frozenset({"inputs", "parameters", "stream"})
_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "presence_penalty",
        "stop",
        "stream",
        "seed",
        "temperature",
        "top_p",
        "tools",
        "tool_prompt",
        "tool_choice",
        "response_format",
        "stream_options",
    }
)
_COMPLETION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stream",
        "seed",
        "suffix",
        "repetition_penalty",
        "frequency_penalty",
        "stop",
    }
)


def _decode_parameters(decoder: _Decoder, path: Path, raw: Any) -> GenerateParameters:
    if isinstance(raw, list):
        # serde also reads a struct from a sequence, field by field; every field has a default, so `[]` is `{}`.
        raw = dict(zip(_PARAMETER_FIELDS, raw, strict=False))
    obj = decoder.struct(path, raw, "GenerateParameters", frozenset(_PARAMETER_FIELDS))

    def at(name: str) -> Path:
        return (*path, name)

    return GenerateParameters(
        best_of=decoder.integer(at("best_of"), obj.get("best_of"), "usize"),
        temperature=decoder.f32(at("temperature"), obj.get("temperature")),
        repetition_penalty=decoder.f32(at("repetition_penalty"), obj.get("repetition_penalty")),
        frequency_penalty=decoder.f32(at("frequency_penalty"), obj.get("frequency_penalty")),
        top_k=decoder.integer(at("top_k"), obj.get("top_k"), "i32"),
        top_p=decoder.f32(at("top_p"), obj.get("top_p")),
        typical_p=decoder.f32(at("typical_p"), obj.get("typical_p")),
        do_sample=decoder.boolean(at("do_sample"), obj.get("do_sample", False)),
        max_new_tokens=decoder.integer(at("max_new_tokens"), obj.get("max_new_tokens"), "u32"),
        return_full_text=decoder.boolean(at("return_full_text"), obj.get("return_full_text"), optional=True),
        stop=decoder.strings(at("stop"), obj.get("stop", [])) or [],
        truncate=decoder.integer(at("truncate"), obj.get("truncate"), "usize"),
        watermark=decoder.boolean(at("watermark"), obj.get("watermark", False)),
        details=decoder.boolean(at("details"), obj.get("details", False)),
        decoder_input_details=decoder.boolean(at("decoder_input_details"), obj.get("decoder_input_details", False)),
        seed=decoder.integer(at("seed"), obj.get("seed"), "u64"),
        top_n_tokens=decoder.integer(at("top_n_tokens"), obj.get("top_n_tokens"), "u32"),
        grammar=decoder.grammar(at("grammar"), obj.get("grammar")),
        adapter_id=decoder.string(at("adapter_id"), obj.get("adapter_id"), optional=True),
    )


def _source_text(raw: Any, text: str | None) -> str:
    return text if text is not None else json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def parse_generate_request(raw: Any, *, compat: bool = False, text: str | None = None) -> GenerateRequest:
    """Decode `GenerateRequest` (or `CompatGenerateRequest` with `stream` when `compat`)."""
    decoder = _Decoder(_source_text(raw, text))
    name, fields = ("CompatGenerateRequest", _COMPAT_FIELDS) if compat else ("GenerateRequest", _GENERATE_FIELDS)
    obj = decoder.struct((), raw, name, fields)
    if "inputs" not in obj:
        decoder.missing((), "inputs")
    inputs = decoder.string(("inputs",), obj["inputs"])
    if "parameters" in obj:
        parameters = _decode_parameters(decoder, ("parameters",), obj["parameters"])
    else:
        # serde's `default_parameters()`: omitting the object turns sampling on (TGI.md gotcha).
        parameters = GenerateParameters(do_sample=True)
    stream = decoder.boolean(("stream",), obj.get("stream", False)) if compat else False
    return GenerateRequest(inputs=inputs, parameters=parameters, stream=stream)


def _message_content(value: Any) -> str | None:
    """`MessageContent`: a string or a list of text / image_url chunks (images become markdown); None if neither."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    parts: list[str] = []
    for chunk in value:
        if not isinstance(chunk, dict):
            return None
        if chunk.get("type") == "text" and isinstance(chunk.get("text"), str):
            parts.append(chunk["text"])
        elif chunk.get("type") == "image_url" and isinstance(chunk.get("image_url"), dict):
            url = chunk["image_url"].get("url")
            if not isinstance(url, str):
                return None
            parts.append(f"![]({url})")
        else:
            return None
    return "".join(parts)


def _tool_calls_text(value: Any) -> tuple[str, list[str]] | None:
    """`MessageBody::Tool`: the calls as TGI renders them into the prompt, and their ids; None if not calls."""
    if not isinstance(value, list):
        return None
    rendered: list[dict[str, Any]] = []
    ids: list[str] = []
    for call in value:
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(call.get("type"), str):
            return None
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            return None
        if "arguments" in function:
            arguments = function["arguments"]
        elif "parameters" in function:
            arguments = function["parameters"]
        else:
            return None
        # FunctionDefinition serialises `arguments` as a JSON string of whatever value was sent.
        arguments_text = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        rendered.append(
            {
                "id": call["id"],
                "type": call["type"],
                "function": {"description": description, "name": function["name"], "arguments": arguments_text},
            }
        )
        ids.append(call["id"])
    return json.dumps(rendered, separators=(",", ":"), ensure_ascii=False), ids


def _tool_spec(decoder: _Decoder, path: Path, value: Any) -> ToolSpec:
    obj = decoder.struct(path, value, "Tool", frozenset({"type", "function"}))
    if "type" not in obj:
        decoder.missing(path, "type")
    kind = decoder.string((*path, "type"), obj["type"])
    if "function" not in obj:
        decoder.missing(path, "function")
    function_path = (*path, "function")
    function = decoder.struct(
        function_path, obj["function"], "FunctionDefinition", frozenset({"description", "name", "arguments"})
    )
    description = decoder.string((*function_path, "description"), function.get("description"), optional=True)
    if "name" not in function:
        decoder.missing(function_path, "name")
    name = decoder.string((*function_path, "name"), function["name"])
    if "arguments" in function:
        parameters = function["arguments"]
    elif "parameters" in function:
        parameters = function["parameters"]
    else:
        decoder.missing(function_path, "arguments")
    return ToolSpec(type=kind, name=name, description=description, parameters=parameters)


def _tool_choice(decoder: _Decoder, value: Any) -> ToolChoice:
    """`ToolTypeDeserializer` (untagged): null, a string, or `{"type": "function", "function": {"name": ...}}`."""
    if value is None:
        return ToolChoice("auto")
    if isinstance(value, str):
        if value in ("none", "auto", "required"):
            return ToolChoice(value)
        # Any other string names a function.
        return ToolChoice("function", value)
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return ToolChoice("function", function["name"])
    decoder.fail_value(("tool_choice",), value, "data did not match any variant of untagged enum ToolTypeDeserializer")


def parse_chat_request(raw: Any, *, text: str | None = None) -> ChatRequest:
    """Decode TGI's `ChatRequest`."""
    decoder = _Decoder(_source_text(raw, text))
    obj = decoder.struct((), raw, "ChatRequest", _CHAT_FIELDS)
    if "messages" not in obj:
        decoder.missing((), "messages")
    raw_messages = obj["messages"]
    if not isinstance(raw_messages, list):
        decoder.invalid_type(("messages",), raw_messages, "a sequence")
    messages: list[tuple[str, str]] = []
    tool_call_ids: list[str] = []
    last_has_content = False
    for index, message in enumerate(raw_messages):
        path: Path = ("messages", index)
        message_obj = decoder.struct(path, message, "Message", frozenset({"role", "name"}))
        if "role" not in message_obj:
            decoder.missing(path, "role")
        role = decoder.string((*path, "role"), message_obj["role"])
        # The body is an untagged `Content | Tool` enum flattened into the message: `content: null` with
        # `tool_calls` is a Tool body.
        content = _message_content(message_obj.get("content")) if "content" in message_obj else None
        if content is not None:
            messages.append((role, content))
            last_has_content = True
            continue
        calls = _tool_calls_text(message_obj.get("tool_calls")) if "tool_calls" in message_obj else None
        if calls is None:
            decoder.fail_at_end(path, "data did not match any variant of untagged enum MessageBody")
        messages.append((role, calls[0]))
        tool_call_ids.extend(calls[1])
        last_has_content = False
    raw_tools = obj.get("tools")
    tools: list[ToolSpec] | None = None
    if raw_tools is not None:
        if not isinstance(raw_tools, list):
            decoder.invalid_type(("tools",), raw_tools, "a sequence")
        tools = [_tool_spec(decoder, ("tools", index), tool) for index, tool in enumerate(raw_tools)]
    include_usage = False
    if "stream_options" in obj:
        # `stream_options` is a plain struct with a serde default: `{}` is fine, `null` is not.
        options = decoder.struct(
            ("stream_options",), obj["stream_options"], "StreamOptions", frozenset({"include_usage"})
        )
        include_usage = decoder.boolean(("stream_options", "include_usage"), options.get("include_usage", False))
    logit_bias = obj.get("logit_bias")
    if logit_bias is not None:
        if not isinstance(logit_bias, list):
            decoder.invalid_type(("logit_bias",), logit_bias, "a sequence")
        for index, item in enumerate(logit_bias):
            decoder.f32(("logit_bias", index), item)
    max_tokens_key = "max_tokens" if "max_tokens" in obj else "max_completion_tokens"
    return ChatRequest(
        model=decoder.string(("model",), obj.get("model"), optional=True),
        messages=messages,
        frequency_penalty=decoder.f32(("frequency_penalty",), obj.get("frequency_penalty")),
        logprobs=decoder.boolean(("logprobs",), obj.get("logprobs"), optional=True),
        top_logprobs=decoder.integer(("top_logprobs",), obj.get("top_logprobs"), "u32"),
        max_tokens=decoder.integer((max_tokens_key,), obj.get(max_tokens_key), "u32"),
        presence_penalty=decoder.f32(("presence_penalty",), obj.get("presence_penalty")),
        stop=decoder.strings(("stop",), obj.get("stop"), optional=True),
        stream=decoder.boolean(("stream",), obj.get("stream", False)),
        seed=decoder.integer(("seed",), obj.get("seed"), "u64"),
        temperature=decoder.f32(("temperature",), obj.get("temperature")),
        top_p=decoder.f32(("top_p",), obj.get("top_p")),
        tools=tools,
        tool_prompt=decoder.string(("tool_prompt",), obj.get("tool_prompt"), optional=True),
        tool_choice=_tool_choice(decoder, obj.get("tool_choice")),
        response_format=decoder.grammar(("response_format",), obj.get("response_format")),
        include_usage=include_usage,
        tool_call_ids=tool_call_ids,
        last_message_has_content=last_has_content,
    )


def parse_completion_request(raw: Any, *, text: str | None = None) -> CompletionRequest:
    """Decode TGI's `CompletionRequest` (prompt: a string or a non-empty list of strings)."""
    decoder = _Decoder(_source_text(raw, text))
    obj = decoder.struct((), raw, "CompletionRequest", _COMPLETION_FIELDS)
    if "prompt" not in obj:
        decoder.missing((), "prompt")
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and all(isinstance(item, str) for item in prompt):
        if not prompt:
            decoder.fail_value(("prompt",), prompt, "Empty array detected. Do not use an empty array for the prompt.")
        prompts = list(prompt)
    else:
        decoder.fail_value(("prompt",), prompt, "data did not match any variant of untagged enum PromptDeserializer")
    return CompletionRequest(
        model=decoder.string(("model",), obj.get("model"), optional=True),
        prompts=prompts,
        max_tokens=decoder.integer(("max_tokens",), obj.get("max_tokens"), "u32"),
        temperature=decoder.f32(("temperature",), obj.get("temperature")),
        top_p=decoder.f32(("top_p",), obj.get("top_p")),
        stream=decoder.boolean(("stream",), obj.get("stream", False)),
        seed=decoder.integer(("seed",), obj.get("seed"), "u64"),
        suffix=decoder.string(("suffix",), obj.get("suffix"), optional=True),
        repetition_penalty=decoder.f32(("repetition_penalty",), obj.get("repetition_penalty")),
        frequency_penalty=decoder.f32(("frequency_penalty",), obj.get("frequency_penalty")),
        stop=decoder.strings(("stop",), obj.get("stop"), optional=True),
    )
