"""expected_reply and the Zephyr chat rendering the emulator uses."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from zephyr_tgi.testing import expected_reply, render_zephyr_prompt

CHAT_PROMPT = "<|system|>\n</s>\n<|user|>\nWhat is TGI?</s>\n<|assistant|>\n"


def test_reply_is_deterministic_for_a_prompt() -> None:
    assert expected_reply("Hello") == expected_reply("Hello")


def test_reply_differs_between_prompts() -> None:
    assert expected_reply("Hello") != expected_reply("Goodbye")


def test_reply_is_the_same_in_another_process() -> None:
    code = "from zephyr_tgi.testing import expected_reply; print(expected_reply('Hello', seed=7))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.rstrip("\n") == expected_reply("Hello", seed=7)


def test_reply_depends_on_the_seed() -> None:
    assert expected_reply("Hello", seed=1) != expected_reply("Hello", seed=2)
    assert expected_reply("Hello", seed=None) == expected_reply("Hello")


@pytest.mark.parametrize("prompt", ["a", "Hello", CHAT_PROMPT, "x" * 1000])
def test_pseudo_reply_is_20_to_60_words_of_punctuated_sentences(prompt: str) -> None:
    reply = expected_reply(prompt)
    assert 20 <= len(reply.split()) <= 60
    assert reply[0].isupper()
    assert reply[-1] in ".!?"
    assert re.fullmatch(r"[A-Za-z ,.!?]+", reply)


def test_a_scripted_reply_for_the_raw_prompt_wins() -> None:
    assert expected_reply("Hello", replies={"Hello": "Hi there."}) == "Hi there."


def test_a_chat_prompt_uses_the_reply_keyed_by_the_last_user_turn() -> None:
    assert expected_reply(CHAT_PROMPT, replies={"What is TGI?": "A server."}) == "A server."


def test_the_raw_prompt_key_beats_the_user_turn_key() -> None:
    replies = {CHAT_PROMPT: "raw", "What is TGI?": "turn"}
    assert expected_reply(CHAT_PROMPT, replies=replies) == "raw"


def test_the_user_turn_key_needs_a_generation_prompt() -> None:
    prompt = "<|user|>\nWhat is TGI?</s>\n"
    assert expected_reply(prompt, replies={"What is TGI?": "A server."}) == expected_reply(prompt)


def test_render_matches_the_canonical_zephyr_prompt() -> None:
    messages = [("system", ""), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye")]
    assert render_zephyr_prompt(messages) == (
        "<|system|>\n</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n<|assistant|>\n"
    )


def test_render_drops_unknown_roles_but_still_adds_the_generation_prompt() -> None:
    assert render_zephyr_prompt([("user", "Hi"), ("tool", "ignored")]) == "<|user|>\nHi</s>\n<|assistant|>\n"


def test_render_continues_a_final_assistant_message() -> None:
    assert render_zephyr_prompt([("user", "Hi"), ("assistant", "Hello  ")]) == "<|user|>\nHi</s>\n<|assistant|>\nHello"


def test_render_of_no_messages_is_empty() -> None:
    assert render_zephyr_prompt([]) == ""
