"""Fuzzing what a server can answer: arbitrary statuses, content types, headers and bodies, and SSE byte streams.

Over real HTTP, the emulator's `scripted_responses` serve each generated answer verbatim (both attempts of a
retried call get it); the sync and async clients, `chat` and `chat_stream`, must end in a result or a
`ZephyrTGIError` subclass, never another exception and never a hang. An HTTP error status always maps to an
`APIStatusError` carrying that status. The pure pieces are fuzzed harder: the error mapping (`from_response`,
`from_stream_event`, `parse_retry_after`) never raises, and the SSE decoder gives the same events however the
byte stream is split into chunks.

The tests at the end pin the bugs this fuzzing found (all fixed): an answer below 400 whose JSON (or SSE event)
had the wrong shape let AttributeError, KeyError, IndexError, TypeError or pydantic's ValidationError escape; an
HTTP error whose JSON body is not an object did the same on the non-streaming path (huggingface_hub's error
formatter); and a 400 naming unused `model_kwargs` made huggingface_hub re-send the request without its
parameters and poison a process-wide cache.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from zephyr_tgi import (
    APIStatusError,
    AsyncZephyrClient,
    GenerationResult,
    RetryPolicy,
    Timeout,
    ZephyrClient,
    ZephyrTGIError,
)
from zephyr_tgi._client.sse import SSEDecoder
from zephyr_tgi._errors import from_response, from_stream_event, parse_retry_after
from zephyr_tgi.testing import ScriptedResponse, TGIEmulator

PROMPT = "Name a river."
RETRY = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.01, max_retry_after=0.05)
TIMEOUT = Timeout(connect=2.0, read=3.0, write=3.0, deadline=5.0)
CALL_CAP = 10.0  # seconds: far above what the client's own timeouts allow
TOKEN = {"id": 1, "text": "a", "logprob": -0.1, "special": False}
KWARGS_NOT_USED = "The following `model_kwargs` are not used by the model: ['details', 'stop', 'max_new_tokens']"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
tgi_shaped = st.one_of(
    st.fixed_dictionaries(
        {"error": st.one_of(st.text(max_size=40), json_values)},
        optional={"error_type": st.one_of(st.sampled_from(["validation", "overloaded", "generation"]), json_values)},
    ),
    st.fixed_dictionaries({"generated_text": json_values}, optional={"details": json_values}),
    st.fixed_dictionaries({"token": st.one_of(st.just(TOKEN), json_values)}, optional={"generated_text": json_values}),
    st.fixed_dictionaries({"error": st.fixed_dictionaries({"message": json_values, "http_status_code": json_values})}),
)


def _truncated(value: Any, cut: int) -> bytes:
    encoded = json.dumps(value).encode()
    return encoded[: cut % max(len(encoded), 1)]


bodies = st.one_of(
    st.just(b""),
    st.sampled_from([b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"Failed to buffer the request body"]),
    st.text(max_size=80).map(str.encode),
    st.builds(_truncated, st.one_of(tgi_shaped, json_values), st.integers(min_value=0)),
    st.one_of(tgi_shaped, json_values).map(lambda value: json.dumps(value).encode()),
    st.lists(st.one_of(tgi_shaped, json_values), min_size=1, max_size=3).map(
        lambda events: b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)
    ),
    st.binary(max_size=200),
    st.sampled_from([100_000, 1_500_000]).map(lambda size: b"x" * size),
)
statuses = st.one_of(
    st.sampled_from([101, 200, 201, 204, 301, 304, 400, 401, 403, 404, 413, 415, 422, 424, 429, 500, 502, 503, 504]),
    st.integers(min_value=100, max_value=599),
)
content_types = st.sampled_from(
    [None, "application/json", "text/plain; charset=utf-8", "text/html", "text/event-stream", "application/x-ndjson"]
)
retry_after_values = st.sampled_from(
    [
        "0",
        "0.01",
        "1e9",
        "-5",
        "nan",
        "inf",
        "abc",
        "",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ]
)
header_sets = st.fixed_dictionaries(
    {}, optional={"retry-after": retry_after_values, "retry-after-ms": retry_after_values, "x-whatever": st.just("1")}
)


@pytest.fixture(scope="module")
def client(emulator: TGIEmulator) -> Iterator[ZephyrClient]:
    with ZephyrClient(emulator.url, retry=RETRY, timeout=TIMEOUT) as made:
        made.info()
        yield made


def _sync(client: ZephyrClient, stream: bool) -> GenerationResult:
    if not stream:
        return client.chat(PROMPT, max_new_tokens=4)
    chunks = list(client.chat_stream(PROMPT, max_new_tokens=4))
    result = chunks[-1].result
    assert result is not None, "a stream that ends without an error must end with its result"
    assert "".join(chunk.text for chunk in chunks) == result.text
    return result


async def _async(url: str, stream: bool) -> GenerationResult:
    async with AsyncZephyrClient(url, retry=RETRY, timeout=TIMEOUT) as made:
        if not stream:
            return await made.chat(PROMPT, max_new_tokens=4)
        chunks = [chunk async for chunk in made.chat_stream(PROMPT, max_new_tokens=4)]
        result = chunks[-1].result
        assert result is not None, "a stream that ends without an error must end with its result"
        assert "".join(chunk.text for chunk in chunks) == result.text
        return result


CALLS: dict[str, Callable[[ZephyrClient, str], GenerationResult]] = {
    "sync chat": lambda client, url: _sync(client, stream=False),
    "sync chat_stream": lambda client, url: _sync(client, stream=True),
    "async chat": lambda client, url: asyncio.run(_async(url, stream=False)),
    "async chat_stream": lambda client, url: asyncio.run(_async(url, stream=True)),
}


@settings(max_examples=100)
@given(status=statuses, content_type=content_types, body=bodies, headers=header_sets)
def test_any_answer_ends_in_a_result_or_a_typed_error(
    emulator: TGIEmulator,
    client: ZephyrClient,
    status: int,
    content_type: str | None,
    body: bytes,
    headers: dict[str, str],
) -> None:
    answer = ScriptedResponse(status=status, body=body, content_type=content_type, headers=headers)
    for name, call in CALLS.items():
        emulator.reset()
        emulator.set_faults(scripted_responses=[answer, answer])
        started = time.monotonic()
        typed: ZephyrTGIError | None = None
        try:
            call(client, emulator.url)
        except ZephyrTGIError as exc:
            event(f"{name}: {type(exc).__name__}")
            typed = exc
        except Exception as exc:  # anything else escaping is the failure this test looks for
            raise AssertionError(f"{name}: HTTP {status} {content_type} {body[:120]!r} raised {exc!r}") from exc
        else:
            event(f"{name}: result")
            assert status < 400, f"{name}: HTTP {status} gave a result"
        if typed is not None and 400 <= status <= 599:
            assert isinstance(typed, APIStatusError), f"{name}: HTTP {status} became {typed!r}"
            assert typed.status_code == status
        assert time.monotonic() - started < CALL_CAP, f"{name} took too long"


# --- the error mapping, pure ---------------------------------------------------------------------------------


@settings(max_examples=500)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.binary(max_size=300), st.one_of(tgi_shaped, json_values).map(lambda v: json.dumps(v).encode())),
    headers=st.dictionaries(st.sampled_from(["retry-after", "Retry-After", "retry-after-ms", "x"]), st.text()),
)
def test_error_mapping_never_fails(status: int, body: bytes, headers: dict[str, str]) -> None:
    error = from_response(status, body, headers)
    assert isinstance(error, APIStatusError)
    assert error.status_code == status
    assert isinstance(error.message, str)
    retry_after = error.retry_after
    assert retry_after is None or retry_after >= 0
    assert repr(error).startswith(type(error).__name__)


@settings(max_examples=500)
@given(event_body=st.dictionaries(st.sampled_from(["error", "error_type", "message"]), json_values, min_size=1))
def test_in_band_error_mapping_never_fails(event_body: dict[str, Any]) -> None:
    event_body.setdefault("error", None)
    error = from_stream_event(event_body, json.dumps(event_body))
    assert isinstance(error, APIStatusError)


@given(value=st.one_of(st.text(), retry_after_values), key=st.sampled_from(["Retry-After", "retry-after-ms"]))
def test_retry_after_parsing_never_fails(value: str, key: str) -> None:
    seconds = parse_retry_after({key: value})
    assert seconds is None or seconds >= 0


# --- SSE byte streams split anywhere -------------------------------------------------------------------------

# A data value cannot hold CR or LF (they end the line); TGI writes U+2028, U+0085 and friends raw, though.
line_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=30,
)
payload_lines = st.lists(line_text, min_size=1, max_size=3)


def _encode_event(lines: Sequence[str], *, space: bool, crlf: bool, comment: bool, other_field: bool) -> bytes:
    end = "\r\n" if crlf else "\n"
    out = (":keep-alive" + end) if comment else ""
    out += ("event: message" + end) if other_field else ""
    for line in lines:
        # One space after "data:" is dropped by SSE, so a value that starts with a space needs it.
        out += "data:" + (" " if space or line.startswith(" ") else "") + line + end
    return (out + end).encode("utf-8")


sse_events = st.lists(
    st.tuples(payload_lines, st.booleans(), st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=6
)


def _split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(raw), *(cut % (len(raw) + 1) for cut in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300)
@given(events=sse_events, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_sse_events_survive_any_chunking(
    events: list[tuple[list[str], bool, bool, bool, bool]], cuts: list[int]
) -> None:
    raw = b"".join(
        _encode_event(lines, space=space, crlf=crlf, comment=comment, other_field=other)
        for lines, space, crlf, comment, other in events
    )
    expected = ["\n".join(lines) for lines, *_ in events]
    decoder = SSEDecoder()
    decoded = [data.decode() for chunk in _split(raw, cuts) for data in decoder.feed(chunk)]
    assert decoded == expected


@given(data=line_text, cut=st.integers(min_value=0))
def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped(data: str, cut: int) -> None:
    raw = _encode_event([data], space=False, crlf=False, comment=False, other_field=False)
    decoder = SSEDecoder()
    partial = raw[: cut % len(raw)]  # never the whole event with its blank line
    assert decoder.feed(partial) == []


token_texts = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n<"), min_size=1, max_size=6),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60)
@given(texts=token_texts)
def test_streamed_tokens_with_any_unicode_arrive_intact(
    emulator: TGIEmulator, client: ZephyrClient, texts: list[str]
) -> None:
    events: list[dict[str, Any]] = [
        {"index": i + 1, "token": {**TOKEN, "text": t}, "generated_text": None} for i, t in enumerate(texts)
    ]
    events[-1]["generated_text"] = "".join(texts)
    body = b"".join(b"data:" + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)
    emulator.reset()
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, body, "text/event-stream")])
    chunks = list(client.chat_stream(PROMPT, max_new_tokens=4))
    assert chunks[-1].result is not None
    assert "".join(chunk.text for chunk in chunks) == chunks[-1].result.text == "".join(texts)


# --- bugs this fuzzing found, each pinned by a test -----------------------------------------------------------


@pytest.mark.parametrize("body", ["{}", "[]", '{"generated_text": 5}', '{"generated_text": "x", "details": 5}'])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_200_with_json_of_the_wrong_shape_is_a_typed_error(
    emulator: TGIEmulator, client: ZephyrClient, body: str, kind: str
) -> None:
    emulator.reset()
    answer = ScriptedResponse(200, body, "application/json")
    emulator.set_faults(scripted_responses=[answer, answer])
    with pytest.raises(ZephyrTGIError):
        CALLS[f"{kind} chat"](client, emulator.url)


@pytest.mark.parametrize(
    "event_json",
    [
        "{}",
        '{"token": 5}',
        '{"token": {"id": 1}}',
        json.dumps({"token": TOKEN, "generated_text": 5}),
        json.dumps({"token": TOKEN, "generated_text": "a", "details": 5}),
    ],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stream_event_of_the_wrong_shape_is_a_typed_error(
    emulator: TGIEmulator, client: ZephyrClient, event_json: str, kind: str
) -> None:
    emulator.reset()
    answer = ScriptedResponse(200, f"data:{event_json}\n\n", "text/event-stream")
    emulator.set_faults(scripted_responses=[answer, answer])
    with pytest.raises(ZephyrTGIError):
        CALLS[f"{kind} chat_stream"](client, emulator.url)


@pytest.mark.parametrize("body", ["null", "[]", "5", '"bad gateway"', '{"errors": 5}', '{"errors": [5]}'])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_http_error_with_a_json_body_that_is_not_an_object_is_a_typed_error(
    emulator: TGIEmulator, client: ZephyrClient, body: str, kind: str
) -> None:
    emulator.reset()
    answer = ScriptedResponse(503, body, "application/json")
    emulator.set_faults(scripted_responses=[answer, answer])
    with pytest.raises(APIStatusError):
        CALLS[f"{kind} chat"](client, emulator.url)


def test_a_400_naming_unused_model_kwargs_is_an_error_not_a_silent_resend() -> None:
    with TGIEmulator() as emulator, ZephyrClient(emulator.url, retry=RetryPolicy.never()) as client:
        emulator.set_faults(
            scripted_responses=[ScriptedResponse(400, json.dumps({"error": KWARGS_NOT_USED}), "application/json")]
        )
        with pytest.raises(APIStatusError):
            client.chat(PROMPT, max_new_tokens=4)
        sent = [r.json for r in emulator.stats.requests if r.path == "/generate"]
        assert len(sent) == 1, f"the request was re-sent without its parameters: {sent}"
        assert client.chat(PROMPT, max_new_tokens=4).text  # and the next call still works
