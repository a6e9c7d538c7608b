"""A small block-style YAML writer for manifests: mappings, sequences, strings, numbers, booleans.

The package does not depend on PyYAML, and the manifests need only this subset. A text of several lines that ends
in one newline becomes a literal block (`|`), so a template in a ConfigMap reads as the file does; other strings
that YAML could read as something else (numbers, booleans, null, flags starting with `-`, text with `:` or `#`)
are written double-quoted with JSON escapes, which YAML's double-quoted style reads back unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = ["YamlValue", "dump_documents"]

YamlValue = str | int | bool | None | Mapping[str, "YamlValue"] | Sequence["YamlValue"]

# Plain scalars kept unquoted: a letter or `/` first, then letters, digits and `_ . / -` only.
_PLAIN = re.compile(r"[A-Za-z/][A-Za-z0-9_./-]*")
# YAML 1.1 (PyYAML, and so many tools) reads these words as booleans or null.
_RESERVED = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf"}
_INDENT = "  "
# Inside double quotes JSON already escapes C0 controls; YAML also refuses DEL, C1 controls and non-characters
# raw, and reads U+0085, U+2028 and U+2029 as line breaks: those are escaped too.
_NOT_YAML_PRINTABLE = re.compile(r"[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
# A literal block keeps newlines only: tabs, carriage returns and other controls are quoted instead.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def dump_documents(documents: Sequence[Mapping[str, YamlValue]]) -> str:
    """Documents separated by `---`, each a mapping, ending in a newline."""
    return "---\n" + "---\n".join("\n".join(_mapping_lines(doc, 0)) + "\n" for doc in documents)


def _scalar(value: YamlValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return _NOT_YAML_PRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)
    raise TypeError(f"not a YAML scalar: {type(value).__name__}")


def _literal_block(value: str) -> bool:
    """Whether `value` survives a `|` block unchanged: several lines, one final newline, no edge spaces."""
    if "\n" not in value.rstrip("\n") or not value.endswith("\n") or value.endswith("\n\n"):
        return False
    # The first line that is not empty sets the block's indentation: it must not start with a space.
    if value.lstrip("\n")[0] == " " or _CONTROL.search(value) or _NOT_YAML_PRINTABLE.search(value):
        return False
    return all(line == line.rstrip(" ") for line in value.splitlines())


def _empty(value: Mapping[str, YamlValue] | Sequence[YamlValue]) -> str:
    return "{}" if isinstance(value, Mapping) else "[]"


def _mapping_lines(mapping: Mapping[str, YamlValue], depth: int) -> list[str]:
    lines: list[str] = []
    pad = _INDENT * depth
    for key, value in mapping.items():
        head = f"{pad}{_scalar(key)}:"
        if isinstance(value, Mapping):
            lines += [head, *_mapping_lines(value, depth + 1)] if value else [f"{head} {_empty(value)}"]
        elif isinstance(value, Sequence) and not isinstance(value, str):
            lines += [head, *_sequence_lines(value, depth + 1)] if value else [f"{head} {_empty(value)}"]
        elif isinstance(value, str) and _literal_block(value):
            inner = _INDENT * (depth + 1)
            lines += [f"{head} |", *(f"{inner}{line}" if line else "" for line in value.splitlines())]
        else:
            lines.append(f"{head} {_scalar(value)}")
    return lines


def _sequence_lines(items: Sequence[YamlValue], depth: int) -> list[str]:
    lines: list[str] = []
    pad = _INDENT * depth
    for item in items:
        if isinstance(item, Mapping):
            nested = _mapping_lines(item, depth + 1)
        elif isinstance(item, Sequence) and not isinstance(item, str):
            nested = _sequence_lines(item, depth + 1)
        else:
            lines.append(f"{pad}- {_scalar(item)}")
            continue
        if not nested:
            lines.append(f"{pad}- {_empty(item)}")
            continue
        # The item's first line moves up beside its dash; the rest stay one level deeper.
        lines.append(f"{pad}- {nested[0].lstrip()}")
        lines += nested[1:]
    return lines
