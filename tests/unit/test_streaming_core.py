"""SSE parsing and stream assembly: framing variants, arbitrary chunk boundaries, stop-sequence hold-back."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zephyr_tgi import GenerationError, MalformedResponseError, OverloadedError
from zephyr_tgi._client.shaping import StreamAssembler, parse_chat_chunk, strip_stop
from zephyr_tgi._client.sse import SSEDecoder


def iter_sse_data(chunks: list[bytes], max_line: int = 1 << 20) -> list[str]:
    decoder = SSEDecoder(max_line)
    return [data.decode() for chunk in chunks for data in decoder.feed(chunk)]


def chunks_of(raw: bytes, cuts: list[int]) -> list[bytes]:
    """Split raw bytes at `cuts`, as the network might."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(raw)}), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def test_data_with_and_without_a_space_and_comments_are_handled() -> None:
    raw = b'data:{"a":1}\n\n: keep-alive\n\ndata: {"b":2}\n\nevent: x\ndata:[DONE]\n\n'
    assert list(iter_sse_data([raw])) == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_multi_line_data_is_joined_and_an_unterminated_event_is_dropped() -> None:
    assert list(iter_sse_data([b"data:a\ndata:b\n\ndata:cut"])) == ["a\nb"]


def test_crlf_framing() -> None:
    assert list(iter_sse_data([b"data:x\r\n\r", b"\ndata:y\r\n\r\n"])) == ["x", "y"]


def test_unicode_line_separators_inside_json_do_not_split_events() -> None:
    raw = '{"text":"a\x85b\u2028c"}'
    assert list(iter_sse_data([f"data:{raw}\n\n".encode()])) == [raw]


_events = st.lists(st.dictionaries(st.sampled_from(["index", "text"]), st.text(max_size=8), max_size=2), max_size=6)


@given(events=_events, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_events_survive_arbitrary_chunk_boundaries(events: list[dict[str, Any]], cuts: list[int]) -> None:
    raw = "".join(f"data:{json.dumps(e, ensure_ascii=False)}\n\n" for e in events).encode()
    cuts = [c for c in cuts if c <= len(raw)]
    assert [json.loads(d) for d in iter_sse_data(chunks_of(raw, cuts))] == events


def token_event(
    index: int, text: str, *, special: bool = False, final: str | None = None, finish: str = "eos_token"
) -> bytes:
    event: dict[str, Any] = {
        "index": index,
        "token": {"id": index, "text": text, "logprob": -0.5, "special": special},
        "generated_text": final,
        "details": None
        if final is None
        else {"finish_reason": finish, "generated_tokens": index, "seed": None, "input_length": 7},
    }
    return json.dumps(event).encode()


def test_chunks_join_to_the_result_text_and_eos_is_not_shown() -> None:
    assembler = StreamAssembler(["</s>"], prompt="p")
    chunks = [
        assembler.feed(token_event(1, "Hello")),
        assembler.feed(token_event(2, " world")),
        assembler.feed(token_event(3, "</s>", special=True, final="Hello world")),
    ]
    assert [c.text for c in chunks] == ["Hello", " world", ""]
    result = chunks[-1].result
    assert result is not None
    assert result.text == "Hello world"
    assert result.finish_reason == "eos_token"
    assert result.input_length == 7
    assert len(result.tokens) == 3
    assert assembler.done


def test_text_that_may_start_a_stop_sequence_is_held_back_then_dropped() -> None:
    assembler = StreamAssembler(["\nUser:", "</s>"], prompt=None)
    texts = [
        assembler.feed(token_event(1, "Yes")).text,
        assembler.feed(token_event(2, "\n")).text,
        assembler.feed(token_event(3, "User")).text,
    ]
    final = assembler.feed(token_event(4, ":", final="Yes\nUser:", finish="stop_sequence"))
    assert texts == ["Yes", "", ""]
    assert final.text == ""
    assert final.result is not None
    assert final.result.text == "Yes"


def test_held_back_text_is_released_when_it_is_not_a_stop_sequence() -> None:
    assembler = StreamAssembler(["</s>"], prompt=None)
    assert assembler.feed(token_event(1, "a <")).text == "a "
    assert assembler.feed(token_event(2, "b")).text == "<b"


def test_in_band_errors_raise_mapped_errors() -> None:
    assembler = StreamAssembler(["</s>"], prompt=None)
    with pytest.raises(OverloadedError):
        assembler.feed(json.dumps({"error": "Model is overloaded", "error_type": "overloaded"}).encode())
    with pytest.raises(GenerationError):
        parse_chat_chunk(
            json.dumps({"error": {"message": "Request failed during generation: x", "http_status_code": 422}}).encode()
        )


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2]",
        b'{"index": 1e999, "token": {"id": 1, "text": "a"}}',
        b'{"index": "one", "token": {"id": 1, "text": "a"}}',
        b'{"index": 1}',
        b"[" * 100_000,
        b'{"error": ' + b"[" * 100_000 + b"}",
    ],
)
def test_malformed_events_are_malformed_response_errors(data: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        StreamAssembler([], None).feed(data)


@pytest.mark.parametrize("data", [b"[1, 2]", b'{"choices": "x"}', b"[" * 100_000])
def test_malformed_chat_events_are_malformed_response_errors(data: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        parse_chat_chunk(data)


def test_a_nan_logprob_is_carried_not_a_crash() -> None:
    chunk = StreamAssembler([], None).feed(b'{"index": 1, "token": {"id": 1, "text": "a", "logprob": NaN}}')
    assert chunk.token.logprob != chunk.token.logprob  # NaN


def test_a_line_longer_than_the_cap_ends_the_stream_with_a_typed_error() -> None:
    decoder = SSEDecoder(max_line=1000)
    decoder.feed(b"data: " + b"x" * 600)
    with pytest.raises(MalformedResponseError, match="longer than"):
        decoder.feed(b"x" * 600)
    with pytest.raises(MalformedResponseError):
        SSEDecoder(max_line=1000).feed(b"data: " + b"y" * 2000 + b"\n\n")


def test_a_line_split_over_many_chunks_is_joined_once() -> None:
    decoder = SSEDecoder()
    pieces = [b"data: " + b"z" * 10] + [b"z" * 10] * 999
    assert all(decoder.feed(piece) == [] for piece in pieces)
    assert decoder.feed(b"\n\n") == [b"z" * 10_000]


def test_done_ends_a_chat_stream() -> None:
    assert parse_chat_chunk(b"[DONE]") is None


@given(text=st.text(max_size=30), stop=st.sampled_from(["</s>", "\n\n", "END"]))
def test_strip_stop_removes_only_a_trailing_stop(text: str, stop: str) -> None:
    assert strip_stop(text + stop, [stop]) == text
    if not text.endswith(stop):
        assert strip_stop(text, [stop]) == text


@given(
    pieces=st.lists(
        st.text(alphabet=st.sampled_from(list("ab<>/s \n")), min_size=1, max_size=4), min_size=1, max_size=12
    )
)
def test_chunks_always_join_to_the_final_text(pieces: list[str]) -> None:
    full = "".join(pieces)
    stops = ["</s>", "\n\n"]
    assembler = StreamAssembler(stops, prompt=None)
    shown = [assembler.feed(token_event(i + 1, p)).text for i, p in enumerate(pieces)]
    final = assembler.feed(token_event(len(pieces) + 1, "</s>", special=True, final=full))
    assert final.result is not None
    assert "".join(shown) + final.text == final.result.text
    if not any(stop in strip_stop(full, stops) for stop in stops):  # the server stops at the first stop
        assert final.result.text == strip_stop(full, stops)


def test_a_tool_call_of_the_wrong_shape_is_a_malformed_response_not_a_validation_error() -> None:
    from zephyr_tgi import ChatCompletion

    completion = ChatCompletion.model_validate({"choices": [{"message": {"tool_calls": [{"id": 5}]}}]})
    with pytest.raises(MalformedResponseError, match="tool call"):
        _ = completion.tool_calls
    chunk = parse_chat_chunk(b'{"choices": [{"delta": {"tool_calls": [{"index": "first"}]}}]}')
    assert chunk is not None
    with pytest.raises(MalformedResponseError, match="tool call"):
        _ = chunk.tool_calls


@given(
    pieces=st.lists(
        st.tuples(st.text(alphabet=st.sampled_from(list("ab<>/s \n")), min_size=1, max_size=4), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    cuts=st.lists(st.integers(0, 13), max_size=4),
    stops=st.sampled_from([["</s>"], ["</s>", "\n\n"], ["<|user|>", "</s>"], []]),
    compact=st.booleans(),
)
# What the fast path must leave to the general one: text held back before a plain token, a special token, a
# token holding the start of a stop sequence.
@example(pieces=[("<", False), ("a", False)], cuts=[], stops=["</s>"], compact=True)
@example(pieces=[("a", False), ("b", True), ("c", False)], cuts=[], stops=["</s>"], compact=True)
@example(pieces=[("a<", False), ("/s", False), ("b", False)], cuts=[2], stops=["</s>"], compact=True)
@settings(max_examples=300)
def test_a_packet_of_events_gives_the_chunks_the_general_path_gives(
    pieces: list[tuple[str, bool]], cuts: list[int], stops: list[str], compact: bool
) -> None:
    # feed_all's fast path (a packet's events in one loop) must give every chunk the general path gives, whatever
    # the stops, special tokens, JSON spacing and packet boundaries. The reference takes the general path for
    # every token: two more stops, with first characters the text never holds, turn the fast path off.
    def event(index: int, text: str, special: bool, final: str | None = None) -> bytes:
        data = json.loads(token_event(index, text, special=special, final=final))
        return json.dumps(data, separators=(",", ":") if compact else None).encode()

    full = "".join(text for text, special in pieces if not special)
    events = [event(i + 1, text, special) for i, (text, special) in enumerate(pieces)]
    events.append(event(len(pieces) + 1, "</s>", True, final=full))
    general = StreamAssembler([*stops, "\x00never", "\x01never"], prompt=None)
    expected = [general.feed(data) for data in events]
    in_packets = StreamAssembler(stops, prompt=None)
    got: list[Any] = []
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(events)}), len(events)]
    for start, end in itertools.pairwise(bounds):
        in_packets.feed_all(events[start:end], got)
    assert got == expected
    assert got[-1].result is not None
    assert "".join(chunk.text for chunk in got) == got[-1].result.text


def test_feed_all_stops_at_the_last_chunk_and_keeps_the_chunks_before_a_bad_event() -> None:
    assembler = StreamAssembler(["</s>"], prompt=None)
    out: list[Any] = []
    with pytest.raises(MalformedResponseError):
        assembler.feed_all([token_event(1, "a"), token_event(2, "b"), b'{"index": "three"}'], out)
    assert [chunk.text for chunk in out] == ["a", "b"]
    final = StreamAssembler(["</s>"], prompt=None)
    out = []
    final.feed_all([token_event(1, "a", final="a"), token_event(2, "ignored")], out)
    assert len(out) == 1
    assert out[0].result is not None
