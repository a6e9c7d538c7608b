"""`zephyr-tgi chat`: one answer, piped stdin, and the interactive session driven through stdin (`-i`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from zephyr_tgi import Conversation, Message, ZephyrClient
from zephyr_tgi._cli.chat import CONTINUATION_PROMPT, PROMPT, MessageReader, parse_assignments
from zephyr_tgi.testing import TGIEmulator

from .conftest import Cli, chat_reply, last_prompt

# -- one answer ----------------------------------------------------------------------------------------


def test_a_prompt_gets_one_streamed_answer(zephyr: Cli) -> None:
    result = zephyr("chat", "What is GPTQ?")

    assert result.exit_code == 0, result.output
    assert result.stdout == chat_reply(("user", "What is GPTQ?")) + "\n"


def test_piped_stdin_is_the_prompt(zephyr: Cli) -> None:
    result = zephyr("chat", input="Summarise this:\nline one\nline two\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == chat_reply(("user", "Summarise this:\nline one\nline two\n")) + "\n"


def test_empty_stdin_is_a_usage_error(zephyr: Cli) -> None:
    result = zephyr("chat", input="")

    assert result.exit_code == 2
    assert "stdin was empty" in result.stderr


def test_system_prompt_is_rendered_into_the_prompt(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("chat", "--system", "You are terse.", "Hi")

    assert result.stdout == chat_reply(("user", "Hi"), system="You are terse.") + "\n"
    assert last_prompt(emulator).startswith("<|system|>\nYou are terse.</s>\n")


def test_sampling_options_reach_the_server(zephyr: Cli, emulator: TGIEmulator) -> None:
    zephyr("chat", "--preset", "model_card", "--max-new-tokens", "7", "--stop", "###", "-p", "typical_p=0.9", "Hi")

    parameters = emulator.stats.requests[-1].json["parameters"]
    assert parameters["max_new_tokens"] == 7
    assert parameters["top_k"] == 40  # from the preset
    assert parameters["typical_p"] == 0.9
    assert parameters["stop"] == ["###", "</s>"]


def test_chat_json_is_one_result_object(zephyr: Cli) -> None:
    result = zephyr("chat", "--json", "Hi")

    data = json.loads(result.stdout)
    assert data["text"] == chat_reply(("user", "Hi"))
    assert data["finish_reason"] == "eos_token"


def test_chat_jsonl_streams_chunks(zephyr: Cli) -> None:
    result = zephyr("chat", "--jsonl", "Hi")

    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert "".join(c["text"] for c in chunks) == chunks[-1]["result"]["text"] == chat_reply(("user", "Hi"))


def test_json_needs_a_prompt(zephyr: Cli) -> None:
    result = zephyr("chat", "-i", "--json", input="Hi\n")

    assert result.exit_code == 2
    assert "--json and --jsonl need a PROMPT" in result.stderr


def test_save_then_load_continues_the_conversation(zephyr: Cli, emulator: TGIEmulator, tmp_path: Path) -> None:
    saved = tmp_path / "conversation.json"

    first = zephyr("chat", "--save", str(saved), "--system", "Be kind.", "First question")
    second = zephyr("chat", "--load", str(saved), "Second question")

    assert first.exit_code == second.exit_code == 0
    answer = chat_reply(("user", "First question"), system="Be kind.")
    assert (
        second.stdout
        == chat_reply(("user", "First question"), ("assistant", answer), ("user", "Second question"), system="Be kind.")
        + "\n"
    )
    assert "<|user|>\nFirst question</s>" in last_prompt(emulator)


def test_loading_a_file_that_is_not_a_conversation_fails_in_one_line(zephyr: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")

    result = zephyr("chat", "--load", str(bad), "Hi")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot load conversation")
    assert len(result.stderr.splitlines()) == 1


# -- the interactive session ------------------------------------------------------------------------


def session(zephyr: Cli, *lines: str, args: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run `chat -i` with these input lines; returns (stdout without prompts, stderr)."""
    result = zephyr("chat", "-i", *args, input="".join(f"{line}\n" for line in lines))
    assert result.exit_code == 0, result.output
    return result.stdout.replace(CONTINUATION_PROMPT, "").replace(PROMPT, ""), result.stderr


def test_session_answers_each_message_with_the_history(zephyr: Cli) -> None:
    out, err = session(zephyr, "Hello", "And then?")

    first = chat_reply(("user", "Hello"))
    second = chat_reply(("user", "Hello"), ("assistant", first), ("user", "And then?"))
    assert out == f"{first}\n{second}\n\n"
    assert "Chatting with TheBloke/zephyr-7B-alpha-GPTQ" in err


def test_backslash_continues_a_message_on_the_next_line(zephyr: Cli, emulator: TGIEmulator) -> None:
    session(zephyr, "first line\\", "second line")

    assert "<|user|>\nfirst line\nsecond line</s>" in last_prompt(emulator)


def test_triple_quotes_enclose_a_multi_line_message(zephyr: Cli, emulator: TGIEmulator) -> None:
    session(zephyr, '"""', "def f():", "    return 1", '"""')

    assert "<|user|>\ndef f():\n    return 1</s>" in last_prompt(emulator)


def test_system_command_sets_shows_and_removes_the_system_prompt(zephyr: Cli, emulator: TGIEmulator) -> None:
    out, err = session(zephyr, "/system Answer in French.", "/system", "Hi", "/system -", "/system")

    assert "system prompt set" in err
    assert "system prompt: 'Answer in French.'" in err
    assert "no system prompt" in err
    assert out.startswith(chat_reply(("user", "Hi"), system="Answer in French."))


def test_params_command_changes_the_options_of_later_answers(zephyr: Cli, emulator: TGIEmulator) -> None:
    out, err = session(zephyr, "/params max_new_tokens=5 temperature=0", "Hi")

    assert "sampling options: max_new_tokens=5 temperature=0" in err
    assert emulator.stats.requests[-1].json["parameters"]["max_new_tokens"] == 5
    assert chat_reply(("user", "Hi")).startswith(out.strip())
    assert "(the answer was cut after 5 tokens" in err


def test_params_key_without_value_unsets_it(zephyr: Cli) -> None:
    _, err = session(zephyr, "/params max_new_tokens=5 top_k=3", "/params top_k=")

    assert err.splitlines()[-1] == "sampling options: max_new_tokens=5"


def test_a_bad_params_value_is_reported_and_the_session_goes_on(zephyr: Cli) -> None:
    out, err = session(zephyr, "/params temperature=-1", "/params nonsense", "Hi")

    assert "error: invalid sampling options: temperature" in err
    assert "error: expected KEY=VALUE, got 'nonsense'" in err
    assert out.startswith(chat_reply(("user", "Hi")))


def test_reset_forgets_the_turns(zephyr: Cli, emulator: TGIEmulator) -> None:
    _, err = session(zephyr, "Hello", "/reset", "Fresh start")

    assert "conversation reset (2 messages forgotten)" in err
    assert "Hello" not in last_prompt(emulator)


def test_save_command_writes_the_conversation(zephyr: Cli, emulator: TGIEmulator, tmp_path: Path) -> None:
    path = tmp_path / "saved.json"

    session(zephyr, "/system Be brief.", "Hello", f"/save {path}")

    with ZephyrClient(emulator.url) as client:
        restored = Conversation.from_json(path.read_text(), client)
    assert restored.system == "Be brief."
    assert restored.messages == [
        Message(role="user", content="Hello"),
        Message(role="assistant", content=chat_reply(("user", "Hello"), system="Be brief.")),
    ]


def test_load_command_replaces_the_conversation(zephyr: Cli, emulator: TGIEmulator, tmp_path: Path) -> None:
    path = tmp_path / "saved.json"
    with ZephyrClient(emulator.url) as client:
        conversation = Conversation(client, system="Old system.")
        conversation.messages += [Message(role="user", content="old"), Message(role="assistant", content="reply")]
        path.write_text(conversation.to_json())

    _, err = session(zephyr, f"/load {path}", "new", "/history")

    assert "loaded 2 messages" in err
    assert "<|user|>\nold</s>\n<|assistant|>\nreply</s>\n<|user|>\nnew</s>" in last_prompt(emulator)
    assert "[system] Old system." in err


def test_save_option_writes_the_session_at_the_end(zephyr: Cli, tmp_path: Path) -> None:
    path = tmp_path / "end.json"

    session(zephyr, "Hello", "/exit", "never sent", args=("--save", str(path)))

    assert next(m["content"] for m in json.loads(path.read_text())["messages"]) == "Hello"


def test_exit_ends_the_session_before_the_remaining_input(zephyr: Cli, emulator: TGIEmulator) -> None:
    session(zephyr, "/exit", "never sent")

    assert not [r for r in emulator.stats.requests if r.path == "/generate_stream"]


def test_double_slash_sends_a_message_starting_with_a_slash(zephyr: Cli, emulator: TGIEmulator) -> None:
    session(zephyr, "//etc/hosts is a file")

    assert "<|user|>\n/etc/hosts is a file</s>" in last_prompt(emulator)


def test_unknown_commands_and_help(zephyr: Cli) -> None:
    _, err = session(zephyr, "/frobnicate", "/help")

    assert "error: unknown command /frobnicate (/help lists them)" in err
    assert "/params [KEY=VALUE]" in err


def test_server_errors_are_reported_and_the_session_goes_on(zephyr: Cli, emulator: TGIEmulator) -> None:
    emulator.set_faults(stream_error_next=1, stream_error_after_tokens=2)

    out, err = session(zephyr, "Hello", "Again")

    assert "error: " in err
    assert out.endswith(chat_reply(("user", "Again")) + "\n\n")  # the failed turn was not kept


def test_dropped_turns_are_reported(tmp_path: Path) -> None:
    with TGIEmulator(max_input_tokens=100, max_total_tokens=160) as small:
        zephyr = Cli(small.url)
        _, err = session(zephyr, *(f"Question number {n}" for n in range(6)), args=("--max-new-tokens", "30"))

    assert "left out to fit the context window" in err


# -- input parsing ----------------------------------------------------------------------------------


def reader(*lines: str) -> MessageReader:
    feed: Iterator[str] = iter(lines)

    def read_line(_prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return MessageReader(read_line)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["plain"], "plain"),
        (["one\\", "two\\", "three"], "one\ntwo\nthree"),
        (['"""', "a", "", "b", '"""'], "a\n\nb"),
        (['"""first', 'last"""'], "first\nlast"),
        (['"""inline"""'], "inline"),
        (['  """', "indented", '  """  '], "indented"),
    ],
)
def test_message_reader_joins_multi_line_input(lines: list[str], message: str) -> None:
    assert reader(*lines).next_message() == message


def test_message_reader_raises_eof_inside_an_open_block() -> None:
    with pytest.raises(EOFError):
        reader('"""', "never closed").next_message()


def test_assignments_parse_json_values_and_keep_text() -> None:
    assert parse_assignments(["max-new-tokens=5", "stop=###", 'stop=["a","b"]', "seed="]) == {
        "max_new_tokens": 5,
        "stop": ["a", "b"],
        "seed": None,
    }


def test_system_command_shows_the_default_from_the_environment(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("chat", "-i", input="/system\n/system -\nHi\n", env={"ZEPHYR_TGI_SYSTEM_PROMPT": "Be nice."})

    assert "system prompt: 'Be nice.'" in result.stderr
    assert last_prompt(emulator).startswith("<|system|>\n</s>\n")  # removed: an empty system turn
