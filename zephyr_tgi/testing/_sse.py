"""Wire encodings: compact JSON, SSE frames as axum writes them, and TGI's stream event shapes."""

from __future__ import annotations

import json
from typing import Any

from ._generation import GenToken

__all__ = [
    "DONE",
    "KEEP_ALIVE",
    "chat_chunk",
    "completion_chunk",
    "dumps",
    "native_error",
    "openai_stream_error",
    "sse",
    "stream_event",
    "token_json",
    "token_sse",
    "tool_call_chunk",
]

# axum 0.7.9's `Event::field` writes the name, `:`, one space, then the value, `[DONE]` included (TGI.md §3, §9).
DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b":\n\n"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_string = json.encoder.encode_basestring


def dumps(obj: Any) -> bytes:
    """serde_json's compact, UTF-8 encoding."""
    return _ENCODER.encode(obj).encode("utf-8")


def sse(obj: Any) -> bytes:
    """One unnamed SSE event carrying `obj` as JSON."""
    return b"data: " + dumps(obj) + b"\n\n"


def native_error(message: str, error_type: str) -> dict[str, str]:
    """TGI's `ErrorResponse`."""
    return {"error": message, "error_type": error_type}


def openai_stream_error(message: str) -> dict[str, Any]:
    """The error event of /v1 streams (http_status_code is hard-coded to 422 in TGI)."""
    return {"error": {"message": message, "http_status_code": 422}}


def token_json(token: GenToken) -> bytes:
    """A `Token` as compact JSON, without building a dict (per-token hot path)."""
    special = b"true" if token.special else b"false"
    return b'{"id":%d,"text":%b,"logprob":%b,"special":%b}' % (
        token.id,
        _encode_string(token.text).encode("utf-8"),
        repr(token.logprob).encode("ascii"),
        special,
    )


def token_sse(index: int, token: GenToken) -> bytes:
    """An intermediate `StreamResponse` event without top_tokens, encoded directly."""
    return b'data: {"index":%d,"token":%b,"generated_text":null,"details":null}\n\n' % (index, token_json(token))


def stream_event(
    index: int,
    token: GenToken,
    top_tokens: list[GenToken] | None,
    generated_text: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `StreamResponse` (top_tokens omitted when empty, as serde skips it)."""
    event: dict[str, Any] = {"index": index, "token": token.to_json()}
    if top_tokens:
        event["top_tokens"] = [t.to_json() for t in top_tokens]
    event["generated_text"] = generated_text
    event["details"] = details
    return event


def chat_chunk(
    *,
    model: str,
    fingerprint: str,
    created: int,
    content: str | None,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk`; content None means the usage-only chunk with no choices."""
    choices: list[dict[str, Any]] = []
    if content is not None:
        choices.append(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        )
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        "usage": usage,
    }


def tool_call_chunk(
    *,
    model: str,
    fingerprint: str,
    created: int,
    call_id: str,
    name: str | None,
    arguments: str,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk` whose delta is a `ToolCallDelta` (no `content` key; `name` only in the first)."""
    delta = {
        "role": "assistant",
        "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": None,
    }


def completion_chunk(
    *,
    model: str,
    fingerprint: str,
    created: int,
    index: int,
    text: str,
    finish_reason: str = "",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A streamed `text_completion` chunk; the last one of a prompt carries `usage` (CompletionFinal)."""
    choices = [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    if usage is None:
        # Field order of TGI's `Chunk` struct.
        return {
            "object": "text_completion",
            "id": "",
            "created": created,
            "choices": choices,
            "model": model,
            "system_fingerprint": fingerprint,
        }
    return {
        "object": "text_completion",
        "id": "",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        "usage": usage,
    }
