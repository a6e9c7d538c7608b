"""Turning TGI's answers into typed results: stop-sequence removal, results, and stream assembly.

Pure functions and a small state machine; no I/O, nothing sync- or async-specific.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .._errors import APIConnectionError, MalformedResponseError, Redactor, from_stream_event
from .._types import (
    BestOfSequence,
    ChatCompletionChunk,
    FinishReason,
    GenerationResult,
    PrefillToken,
    StreamChunk,
    Token,
)
from .sse import DONE

__all__ = [
    "StreamAssembler",
    "parse_answer",
    "parse_answers",
    "parse_chat_chunk",
    "parse_generation",
    "strip_stop",
]


def strip_stop(text: str, stops: Sequence[str]) -> str:
    """`text` without a trailing stop sequence (TGI keeps the stop text in `generated_text`)."""
    for stop in sorted(stops, key=len, reverse=True):
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


_M = TypeVar("_M", bound=BaseModel)


def _malformed(exc: ValidationError, what: str) -> MalformedResponseError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(map(str, first["loc"])) or "top level"
    return MalformedResponseError(f"the server's {what} is not in TGI's format: {first['msg']} at {where}")


def parse_answer(model: type[_M], data: bytes | str, *, what: str) -> _M:
    """JSON text validated as `model` (pydantic-core parses it: deep nesting is an error, not a crash).

    Raises:
        MalformedResponseError: the server's answer does not have TGI's shape.
    """
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise _malformed(exc, what) from exc


_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def parse_answers(model: type[_M], data: bytes | str, *, what: str) -> list[_M]:
    """A JSON list of `model`s (e.g. /tokenize's spans), validated."""
    adapter = _LIST_ADAPTERS.get(model)
    if adapter is None:
        adapter = _LIST_ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    try:
        items: list[_M] = adapter.validate_json(data)
    except ValidationError as exc:
        raise _malformed(exc, what) from exc
    return items


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Details(_Wire):
    finish_reason: FinishReason | None = None
    generated_tokens: int | None = None
    seed: int | None = None
    input_length: int | None = None
    prefill: tuple[PrefillToken, ...] | None = None
    tokens: tuple[Token, ...] | None = None
    top_tokens: tuple[tuple[Token, ...], ...] | None = None
    best_of_sequences: tuple[BestOfSequence, ...] | None = None


class _Generation(_Wire):
    generated_text: str
    details: _Details | None = None


def parse_generation(data: bytes, *, stops: Sequence[str], prompt: str | None) -> GenerationResult:
    """A `/generate` answer as a result (TGI answers an object; a list of one is accepted, as huggingface_hub does).

    Raises:
        MalformedResponseError: the answer does not have TGI's shape.
    """
    if data[:1] == b"[":
        items = parse_answers(_Generation, data, what="answer")
        if len(items) != 1:
            raise MalformedResponseError(f"the server answered {len(items)} generations for one prompt")
        output = items[0]
    else:
        output = parse_answer(_Generation, data, what="answer")
    details = output.details
    result: dict[str, Any] = {
        "text": strip_stop(output.generated_text, stops),
        "generated_text": output.generated_text,
        "prompt": prompt,
    }
    if details is not None:
        result.update(
            finish_reason=details.finish_reason,
            generated_tokens=details.generated_tokens,
            seed=details.seed,
            input_length=details.input_length,
            tokens=details.tokens or (),
            prefill=details.prefill or (),
            top_tokens=details.top_tokens or (),
            best_of_sequences=details.best_of_sequences or (),
        )
    return GenerationResult.model_construct(**result)


class _StreamEvent(_Wire):
    index: int | None = None
    token: Token | None = None
    top_tokens: tuple[Token, ...] | None = None
    generated_text: str | None = None
    details: _Details | None = None
    error: Any = None
    error_type: Any = None


def _held_back(buffer: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `buffer` could still be (the start of) a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop), len(buffer)), longest, -1):
            if buffer.endswith(stop[:size]):
                longest = size
                break
    return longest


# pydantic's own validator of StreamChunk, called directly: `model_validate_json` only wraps it, at a cost that
# shows once per token.
_validate_chunk = StreamChunk.__pydantic_validator__.validate_json
_chunk_of = StreamChunk.__pydantic_validator__.validate_python
_text_of = operator.attrgetter("text")
# How TGI ends a token event that is not the last (its text, before it, cannot fake a JSON key: its quotes are
# escaped).
_TOKEN_EVENT_END = b'"generated_text":null,"details":null}'


def _token_event(data: bytes) -> bool:
    """Whether `generated_text` is null in an event, wherever its last keys are."""
    at = data.rfind(b'"generated_text":')
    return at != -1 and data.startswith(b"null", at + 17)


class StreamAssembler:
    """Turns `/generate_stream` events into `StreamChunk`s and the final `GenerationResult`.

    Text that might be the beginning of a stop sequence is held back until it is clear that it is not,
    so a stop sequence (and `</s>`) never reaches the caller, and the chunks' texts join to `result.text`.
    """

    __slots__ = (
        "_buffer",
        "_prompt",
        "_reach",
        "_redactor",
        "_special_kept",
        "_starts",
        "_stops",
        "_tokens",
        "_top_tokens",
        "done",
    )

    def __init__(self, stops: Sequence[str], prompt: str | None, redactor: Redactor | None = None) -> None:
        self._stops = tuple(stops)
        # Text can only be held back when one of the last `_reach` characters starts a stop sequence: checked
        # first, so most tokens skip the full search.
        self._starts = tuple({stop[0] for stop in self._stops if stop})
        self._reach = max((len(stop) for stop in self._stops), default=0)
        self._prompt = prompt
        self._redactor = redactor
        self._buffer = ""
        self._tokens: list[Token] = []
        self._special_kept = False  # whether a special token is among `_tokens` (its text is never shown)
        self._top_tokens: list[tuple[Token, ...]] = []
        self.done = False

    @property
    def tokens_seen(self) -> int:
        """Tokens received so far."""
        return len(self._tokens)

    def feed(self, data: bytes) -> StreamChunk:
        """Consume one event's data; raise the mapped error for an in-band error event.

        Raises:
            APIStatusError: an in-band error event.
            MalformedResponseError: an event not in TGI's format.
        """
        out: list[StreamChunk] = []
        self.feed_all((data,), out)
        return out[0]

    def feed_all(self, events: Iterable[bytes], out: list[StreamChunk]) -> None:
        """`feed` each event, appending its chunk to `out`, until the last chunk; an event that fails raises
        with the chunks before it in `out`.

        A packet's events in one loop. The hot path is TGI's own token events (`"generated_text":null` as
        their last such key: a token's text, which comes before it, cannot fake that): one validation
        straight into the chunk, then a few checks (nothing held back, no special token, no top tokens, and
        not the one character that starts every stop sequence anywhere in the text: a test stricter than
        `_plain`, so never wrong). Anything else, or anything that does not validate that way, takes the
        general path.
        """
        validate, keep, append = _validate_chunk, self._tokens.append, out.append
        # "" when there is no single start character: never absent from a text, so no chunk takes the short cut.
        start = self._starts[0] if len(self._starts) == 1 else ""
        held = bool(self._buffer)
        for data in events:
            # TGI's exact ending first (one check), then any order of keys after `generated_text`.
            if data.endswith(_TOKEN_EVENT_END) or _token_event(data):
                try:
                    chunk: StreamChunk = validate(data)
                except ValidationError:
                    pass
                else:
                    if not held and start not in chunk.text and not chunk.token.special and not chunk.top_tokens:
                        keep(chunk.token)
                        append(chunk)
                        continue
                    append(self._settle(chunk))
                    held = bool(self._buffer)
                    continue
            chunk = self._feed_event(data)
            append(chunk)
            if chunk.result is not None:
                return
            held = bool(self._buffer)

    def _settle(self, chunk: StreamChunk) -> StreamChunk:
        """A token event's chunk, validated: recorded, with the text to show now."""
        token = chunk.token
        if self._buffer or token.special or not self._plain(chunk.text):
            text = self._shown(token, chunk.top_tokens)
            return chunk if text == chunk.text else chunk.model_copy(update={"text": text})
        # Nothing held back and nothing to hold: the token's text is shown as it is (most tokens).
        self._tokens.append(token)
        if chunk.top_tokens:
            self._top_tokens.append(chunk.top_tokens)
        return chunk

    def _plain(self, text: str) -> bool:
        """Whether no stop sequence can start in the last characters of `text`."""
        starts = self._starts
        if not starts:
            return True
        tail = text[-self._reach :]
        return not (starts[0] in tail if len(starts) == 1 else any(start in tail for start in starts))

    def _feed_event(self, data: bytes) -> StreamChunk:
        try:
            event = _StreamEvent.model_validate_json(data)
        except ValidationError as exc:
            raise _malformed(exc, "stream event") from exc
        if event.error is not None:
            raise self._in_band_error(event, data)
        token = event.token
        if token is None:
            raise MalformedResponseError("the server's stream event has no token")
        top = event.top_tokens or ()
        index = event.index if event.index is not None else len(self._tokens) + 1
        if event.generated_text is None:
            return StreamChunk(index=index, text=self._shown(token, top), token=token, top_tokens=top)
        self._tokens.append(token)
        if top:
            self._top_tokens.append(top)
        if token.special:
            self._special_kept = True
        else:
            self._buffer += token.text
        return self._finish(event, index, token, top, event.generated_text)

    def _shown(self, token: Token, top: tuple[Token, ...]) -> str:
        """Record a token that is not the last; the text to show now (held-back text released or kept)."""
        self._tokens.append(token)
        if top:
            self._top_tokens.append(top)
        if token.special:
            self._special_kept = True
        buffer = self._buffer + token.text if not token.special else self._buffer
        tail = buffer[-self._reach :] if self._reach else ""
        starts = self._starts
        if starts[0] in tail if len(starts) == 1 else any(start in tail for start in starts):
            keep = _held_back(buffer, self._stops)
            text, self._buffer = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
        else:
            text, self._buffer = buffer, ""
        return text

    def _in_band_error(self, event: _StreamEvent, data: bytes) -> Exception:
        raw = data.decode("utf-8", "replace")
        return from_stream_event({"error": event.error, "error_type": event.error_type}, raw, redactor=self._redactor)

    def _finish(
        self, event: _StreamEvent, index: int, token: Token, top: tuple[Token, ...], generated_text: str
    ) -> StreamChunk:
        self.done = True
        details = event.details or _Details()
        final_text = strip_stop(generated_text, self._stops)
        # What was shown is every token's text but what is still held back (nothing is ever dropped before).
        tokens = self._tokens
        texts = [kept.text for kept in tokens if not kept.special] if self._special_kept else map(_text_of, tokens)
        shown = "".join(texts)
        emitted = shown[: len(shown) - len(self._buffer)]
        # Normally the tokens' texts join to generated_text; if the server decoded differently, the
        # final chunk still completes exactly what was shown so far.
        text = final_text[len(emitted) :] if final_text.startswith(emitted) else strip_stop(self._buffer, self._stops)
        result = GenerationResult.model_construct(
            text=emitted + text,
            generated_text=generated_text,
            finish_reason=details.finish_reason,
            generated_tokens=details.generated_tokens if details.generated_tokens is not None else len(self._tokens),
            seed=details.seed,
            input_length=details.input_length,
            tokens=tuple(self._tokens),
            prefill=(),
            top_tokens=tuple(self._top_tokens),
            best_of_sequences=(),
            prompt=self._prompt,
        )
        # Its parts are already typed: pydantic's validator passes them through faster than `model_construct`.
        parts = {"index": index, "text": text, "token": token, "top_tokens": top, "result": result}
        chunk: StreamChunk = _chunk_of(parts)
        return chunk

    def end_of_stream(self) -> APIConnectionError:
        """The error for a stream that ended before its final event."""
        return APIConnectionError(
            f"the stream ended after {len(self._tokens)} token(s) without its final event (connection lost)"
        )


class _ChatError(_Wire):
    error: Any = None


def parse_chat_chunk(data: bytes, redactor: Redactor | None = None) -> ChatCompletionChunk | None:
    """One `/v1/chat/completions` stream event; None for the `[DONE]` terminator.

    Raises:
        APIStatusError: an in-band error event.
        MalformedResponseError: an event not in the OpenAI chunk format.
    """
    if data == b"[DONE]" or data.strip() == DONE.encode():
        return None
    if b'"error"' in data:
        try:
            error = _ChatError.model_validate_json(data).error
        except ValidationError as exc:
            raise _malformed(exc, "chat stream event") from exc
        if error is not None:
            raw = data.decode("utf-8", "replace")
            raise from_stream_event({"error": error}, raw, redactor=redactor)
    return parse_answer(ChatCompletionChunk, data, what="chat stream event")
