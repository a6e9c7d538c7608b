"""Tool calling as TGI's router does it: the tool grammar, the prompt suffix, and parsing what was generated.

TGI (router/src/infer/tool_grammar.rs, chat.rs) constrains generation to
`{"function": {"_name": <tool>, <arguments>...}}`, answers with `message.tool_calls` and, when the model
picks the added `no_tool` function, generates again without tools. The emulator's stand-in model picks
the named tool, else the first tool, except after a tool result (a last message with role `tool`), where
`auto` answers in text; so a tool loop against the emulator ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._grammar import json_instance
from ._tokenizer import EmulatorTokenizer, TokenSpan

__all__ = [
    "NO_TOOL",
    "ToolCallTokenizer",
    "ToolChoice",
    "ToolSpec",
    "ToolStreamState",
    "UnknownToolError",
    "next_tool_call_id",
    "parse_tool_output",
    "tool_call_text",
    "tool_grammar",
    "tool_prompt_suffix",
    "tools_to_use",
]

NO_TOOL = "no_tool"
DEFAULT_TOOL_PROMPT = (
    "\nGiven the functions available, please respond with a JSON for a function call with its proper arguments that "
    "best answers the given prompt. Respond in the format {name: function name, parameters: dictionary of argument "
    "name and its value}.Do not use variables.\n"
)
_NO_TOOL_DESCRIPTION = "Open ended response with no specific tool selected"


class UnknownToolError(Exception):
    """`tool_choice` names a tool that is not in `tools` (TGI's ToolError text)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One entry of `tools`: `parameters` is the JSON schema of the arguments (serde alias `arguments`)."""

    type: str
    name: str
    description: str | None
    parameters: Any

    def to_json(self) -> dict[str, Any]:
        """TGI's `Tool` serialisation: `arguments` is the schema as a JSON string."""
        arguments = json.dumps(self.parameters, separators=(",", ":"), ensure_ascii=False)
        return {
            "type": self.type,
            "function": {"description": self.description, "name": self.name, "arguments": arguments},
        }


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`auto`, `none`, `required`, or `function` with the forced tool's name."""

    mode: str
    name: str | None = None


_NO_TOOL_SPEC = ToolSpec("function", NO_TOOL, _NO_TOOL_DESCRIPTION, {"type": "object"})


def tools_to_use(tools: Sequence[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """`ToolGrammar::apply`'s selection: empty means "no tool grammar" (tool_choice none)."""
    if choice.mode == "function":
        for tool in tools:
            if tool.name == choice.name:
                return [tool]
        raise UnknownToolError(f"Tool with name {choice.name} not found")
    if choice.mode == "required":
        return list(tools)
    if choice.mode == "auto":
        return [*tools, _NO_TOOL_SPEC]
    return []


def tool_prompt_suffix(tools: Sequence[ToolSpec], tool_prompt: str | None) -> str:
    """What TGI appends to the last message when the template does not use `tools` (zephyr's does not)."""
    prompt = tool_prompt or DEFAULT_TOOL_PROMPT
    rendered = json.dumps([tool.to_json() for tool in tools], separators=(",", ":"), ensure_ascii=False)
    return f"\n---\n{rendered}\n{prompt}"


def _function_schema(tool: ToolSpec) -> dict[str, Any]:
    """The per-function schema ToolGrammar builds: `_name` fixed first, then the tool's own properties."""
    properties: dict[str, Any] = {"_name": {"type": "string", "const": tool.name}}
    required: list[Any] = ["_name"]
    if isinstance(tool.parameters, dict):
        own = tool.parameters.get("properties")
        if isinstance(own, dict):
            properties.update(own)
        own_required = tool.parameters.get("required")
        if isinstance(own_required, list):
            required.extend(own_required)
    schema: dict[str, Any] = {"description": tool.description or "", "properties": properties, "required": required}
    if isinstance(tool.parameters, dict):
        # Verbatim TGI: only the *string* "true" allows additional properties.
        schema["additionalProperties"] = tool.parameters.get("additionalProperties") == "true"
    return schema


def tool_grammar(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON schema TGI sends to the shard: one `$functions` entry per tool, `function` any of them."""
    return {
        "$functions": {tool.name: _function_schema(tool) for tool in tools},
        "properties": {"function": {"anyOf": [{"$ref": f"#/$functions/{tool.name}"} for tool in tools]}},
    }


def tool_call_text(tools: Sequence[ToolSpec], *, after_tool_result: bool) -> str:
    """What the stand-in model writes under the tool grammar: spaced JSON, as Llama wrote it in TGI's tests."""
    chosen = tools[0]
    if after_tool_result and any(tool.name == NO_TOOL for tool in tools):
        chosen = _NO_TOOL_SPEC
    schema = _function_schema(chosen)
    return json.dumps({"function": json_instance(schema)}, ensure_ascii=False)


def _call_name(text: str) -> str | None:
    """The `_name` of a complete `{"function": {"_name": ...}}` document, as serde reads TGI's `Call`."""
    try:
        call = json.loads(text)
    except ValueError:
        return None
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("_name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def parse_tool_output(text: str) -> tuple[str, str] | None:
    """`chat::parse_output`: (name, arguments as a JSON string), or None for `no_tool`.

    Raises:
        ValueError: the text is not a tool call (TGI answers 422 tool_error).
    """
    name = _call_name(text)
    if name is None:
        raise ValueError(f"Failed to parse generated text: {text!r}")
    if name == NO_TOOL:
        return None
    function = json.loads(text)["function"]
    arguments = {key: value for key, value in function.items() if key != "_name"}
    return name, json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def next_tool_call_id(previous_ids: Sequence[str]) -> str:
    """`ChatRequest::next_tool_call_id`: one more than the largest integer id so far, else a UUID."""
    next_id = 0
    for call_id in previous_ids:
        if not call_id.isdigit():
            return str(uuid.uuid4())
        next_id = max(next_id, int(call_id) + 1)
    return str(next_id)


class ToolStreamState:
    """`chat::ChatState` in tool mode: buffer until the name is known, then stream the arguments.

    `push` returns None while buffering, `(name or None, arguments fragment)` for an event, and
    NO_TOOL when the model chose to answer in text. Like TGI, nothing is sent after the call is complete.
    """

    def __init__(self) -> None:
        self._text = ""
        self._in_tool = False

    def push(self, token_text: str) -> tuple[str | None, str] | str | None:
        self._text += token_text
        if not self._in_tool:
            partial = self._text
            while partial and (partial[-1].isspace() or partial[-1] in ",}"):
                partial = partial[:-1]
            name = _call_name(partial + "}}")
            if name is None:
                return None
            if name == NO_TOOL:
                return NO_TOOL
            self._in_tool = True
            return name, "{"
        if _call_name(self._text) is not None:
            self._in_tool = False
            fragment = token_text.rstrip()
            # Only the closing brace of the outer object is dropped.
            return None, fragment[:-1] if fragment.endswith("}") else fragment
        return None, token_text


class ToolCallTokenizer:
    """The model's tokenizer for tool-call text, keeping `",` as one token as zephyr's vocabulary does.

    TGI's stream parser swallows the token that completes the function name; with `",` in one piece that
    token is exactly the separator, so the streamed arguments stay valid JSON (they would not with the
    builtin tokenizer's separate `"` and `,`).
    """

    def __init__(self, base: EmulatorTokenizer) -> None:
        self._base = base

    def encode(self, text: str) -> list[TokenSpan]:
        merged: list[TokenSpan] = []
        for span in self._base.encode(text):
            if merged and merged[-1].text == '"' and span.text == ",":
                previous = merged.pop()
                span = TokenSpan(previous.id, '",', previous.start, span.stop)
            merged.append(span)
        return merged
