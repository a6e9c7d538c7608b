"""The YAML writer: whatever it writes, PyYAML reads back as the same data (strings stay strings)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from zephyr_tgi._deploy.yaml_text import YamlValue, dump_documents

# Texts of several lines too, so that literal blocks (and the texts they must refuse) are generated.
_lines = st.lists(st.text(max_size=8), min_size=2, max_size=4).map(lambda lines: "\n".join(lines) + "\n")
_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30) | _lines
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(min_size=1, max_size=12), _values, min_size=1, max_size=5))
def test_any_document_reads_back_unchanged(document: dict[str, YamlValue]) -> None:
    assert yaml.safe_load(dump_documents([document])) == document


@pytest.mark.parametrize(
    "text",
    ["4096", "0.0.0.0", "true", "No", "null", "~", "--port", "-", "a: b", "# not a comment", "1e3", "0x1F", "", " x"],
)
def test_strings_that_look_like_other_things_stay_strings(text: str) -> None:
    written = dump_documents([{"value": text}])

    assert yaml.safe_load(written) == {"value": text}
    assert written.count('"') >= 2  # quoted, not left for the reader to guess


def test_a_multi_line_file_is_a_literal_block() -> None:
    template = "{%- for m in messages %}\n{{- m['content'] + '\\n' }}\n\n{%- endfor %}\n"

    written = dump_documents([{"data": {"t.jinja": template}}])

    assert "t.jinja: |\n    {%- for m in messages %}\n" in written
    assert yaml.safe_load(written) == {"data": {"t.jinja": template}}


@pytest.mark.parametrize("text", ["a\nb", "a\nb\n\n", "a \nb\n", "  a\nb\n", "\n  a\nb\n", "a\tb\nc\n", "a\r\nb\n"])
def test_texts_a_literal_block_would_change_are_quoted(text: str) -> None:
    written = dump_documents([{"t": text}])

    assert "|" not in written
    assert yaml.safe_load(written) == {"t": text}


def test_documents_are_separated_and_lists_of_mappings_nest() -> None:
    written = dump_documents([{"a": [{"b": 1, "c": [2, []]}, {}]}, {"d": {}}])

    assert written == "---\na:\n  - b: 1\n    c:\n      - 2\n      - []\n  - {}\n---\nd: {}\n"
    assert list(yaml.safe_load_all(written)) == [{"a": [{"b": 1, "c": [2, []]}, {}]}, {"d": {}}]
