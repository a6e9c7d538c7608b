"""Results and conversations read well: one-line reprs with a text preview and counts, escaped notebook HTML."""

from __future__ import annotations

from zephyr_tgi import ChatCompletion, Conversation, GenerationResult, StreamChunk, Token, ZephyrClient


def long_result() -> GenerationResult:
    tokens = tuple(Token(id=i, text=" word") for i in range(400))
    return GenerationResult(
        text="word " * 400, generated_text="word " * 400, finish_reason="length", generated_tokens=400, tokens=tokens
    )


def test_a_result_repr_is_one_short_line_with_preview_and_counts() -> None:
    shown = repr(long_result())
    assert "\n" not in shown
    assert len(shown) < 200
    assert shown.startswith("GenerationResult(text='word word")
    assert "…'" in shown
    assert "chars=2000" in shown
    assert "finish_reason='length'" in shown
    assert "generated_tokens=400" in shown


def test_printing_a_batch_result_is_one_line_per_item() -> None:
    assert repr([long_result()] * 3).count("GenerationResult(") == 3
    assert len(repr([long_result()] * 3)) < 600


def test_a_short_text_is_shown_whole_and_newlines_are_flattened() -> None:
    result = GenerationResult(text="Hi\nthere", generated_text="Hi\nthere", finish_reason="eos_token")
    assert repr(result).startswith("GenerationResult(text='Hi there', chars=8, finish_reason='eos_token'")


def test_a_stream_chunk_repr_shows_its_token_not_the_whole_history() -> None:
    chunk = StreamChunk(index=3, text=" word", token=Token(id=7, text=" word"), result=long_result())
    assert repr(chunk).startswith("StreamChunk(index=3, text=' word', token_id=7, result=GenerationResult(")
    assert len(repr(chunk)) < 300


def test_a_chat_completion_repr_shows_text_or_tool_names_and_usage() -> None:
    text = ChatCompletion.model_validate(
        {
            "choices": [{"message": {"content": "x" * 500}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    )
    assert repr(text).endswith("finish_reason='stop', prompt_tokens=5, completion_tokens=9)")
    assert len(repr(text)) < 150
    calls = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "message": {"tool_calls": [{"id": "0", "function": {"name": "get_weather", "arguments": "{}"}}]},
                    "finish_reason": "stop",
                }
            ]
        }
    )
    assert repr(calls) == "ChatCompletion(tool_calls=[get_weather], finish_reason='stop')"


def test_a_conversation_repr_and_html() -> None:
    with ZephyrClient("http://127.0.0.1:9") as client:
        conversation = Conversation(client, system="Be <brief>.")
        assert repr(conversation) == "Conversation(0 messages, system='Be <brief>.', dropped=0)"
        conversation.messages.extend(
            Conversation.from_json(
                '{"version": 1, "messages": [{"role": "user", "content": "a <b> & c"},'
                ' {"role": "assistant", "content": "' + "long " * 40 + '"}]}',
                client,
            ).messages
        )
        shown = repr(conversation)
        assert shown.startswith("Conversation(2 messages, system='Be <brief>.', last=assistant: 'long long")
        assert len(shown) < 160
        page = conversation._repr_html_()
        assert "Be &lt;brief&gt;." in page
        assert "a &lt;b&gt; &amp; c" in page
        assert page.count("<tr>") == 1 + 3  # the header, the system turn and two messages
