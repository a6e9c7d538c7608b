"""The client's types parse every response TGI's own integration tests recorded (tgi-snapshots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import reference_dir
from zephyr_tgi import ChatCompletion, ChatCompletionChunk
from zephyr_tgi._client.shaping import parse_answer, parse_chat_chunk, parse_generation

SNAPSHOTS = sorted((reference_dir() / "tgi-snapshots").glob("*/*.json"))


def _records(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


def test_all_snapshot_files_are_found() -> None:
    assert len(SNAPSHOTS) == 39


@pytest.mark.parametrize("path", SNAPSHOTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_snapshot_parses(path: Path) -> None:
    for record in _records(path):
        kind = record.get("object")
        if "generated_text" in record:
            # The client's own path: the body's bytes through parse_generation.
            result = parse_generation(json.dumps(record).encode(), stops=["</s>"], prompt=None)
            assert result.generated_text == record["generated_text"]
            details = record.get("details") or {}
            assert result.finish_reason == details.get("finish_reason")
            assert len(result.tokens) == len(details.get("tokens") or [])
            assert [t.logprob for t in result.prefill] == [t["logprob"] for t in details.get("prefill") or []]
        elif kind == "chat.completion":
            completion = parse_answer(ChatCompletion, json.dumps(record), what="chat completion")
            assert completion.text == (record["choices"][0]["message"].get("content") or "")
            if record.get("usage"):
                assert completion.usage is not None
        elif kind == "chat.completion.chunk":
            chunk = parse_chat_chunk(json.dumps(record).encode())
            assert isinstance(chunk, ChatCompletionChunk)
            assert len(chunk.choices) == len(record["choices"])
        else:
            # /v1/completions: a route this client does not call (it templates chat itself).
            assert kind == "text_completion", path
