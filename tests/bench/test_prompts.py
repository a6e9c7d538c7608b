"""Prompts for load tests: synthetic ones of an exact token length, and JSONL files."""

from __future__ import annotations

from pathlib import Path

import pytest

from zephyr_tgi import AsyncZephyrClient, ConfigurationError
from zephyr_tgi.bench import load_jsonl_prompts, synthetic_prompts


@pytest.mark.parametrize("length", [40, 129, 300])
async def test_synthetic_prompts_have_exactly_the_asked_token_count(
    fixed_client: AsyncZephyrClient, length: int
) -> None:
    prompts = await synthetic_prompts(fixed_client, input_tokens=length, output_tokens=7, count=3)

    assert len({p.content for p in prompts}) == 3  # distinct, so no prefix cache answers from memory
    for prompt in prompts:
        counted = await fixed_client.count_tokens([{"role": "user", "content": prompt.content}])
        assert counted == prompt.input_tokens == length
        assert prompt.max_new_tokens == 7


async def test_the_server_counts_the_same_length_in_its_answer(fixed_client: AsyncZephyrClient) -> None:
    (prompt,) = await synthetic_prompts(fixed_client, input_tokens=64, output_tokens=4, count=1)
    chunks = [chunk async for chunk in fixed_client.chat_stream(prompt.content, max_new_tokens=4)]

    assert chunks[-1].result is not None
    assert chunks[-1].result.input_length == 64


async def test_a_length_shorter_than_the_template_is_refused(fixed_client: AsyncZephyrClient) -> None:
    with pytest.raises(ConfigurationError, match="shorter than the chat template"):
        await synthetic_prompts(fixed_client, input_tokens=3)


def test_jsonl_prompts_accept_the_usual_field_names(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "Hi", "output_tokens": 12}\n\n{"content": "Hello", "system": "Be brief"}\n', encoding="utf-8"
    )

    first, second = load_jsonl_prompts(path, default_max_new_tokens=50)

    assert (first.content, first.max_new_tokens) == ("Hi", 12)
    assert (second.content, second.system, second.max_new_tokens) == ("Hello", "Be brief", 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json\n", "prompts.jsonl:1: not JSON"),
        ('["a list"]\n', "expected a JSON object"),
        ('{"content": ""}\n', "content"),
        ('{"content": "x", "colour": "red"}\n', "colour"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_bad_jsonl_lines_say_where_and_what(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigurationError, match=message):
        load_jsonl_prompts(path)


def test_a_missing_prompts_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read prompts file"):
        load_jsonl_prompts(tmp_path / "absent.jsonl")
