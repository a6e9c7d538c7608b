"""Replies for constrained generation: a minimal JSON instance of a schema, a string matching a regex."""

from __future__ import annotations

import importlib
import json
import math
import re
from typing import Any

__all__ = ["grammar_reply", "json_instance", "regex_instance"]

# Beyond this depth only required properties and minimum array lengths are produced, so recursive
# schemas (trees, linked lists) still terminate.
_FULL_DEPTH = 6
_MAX_DEPTH = 32
_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}
# Used when a regex is too exotic to invert; documented in the emulator's docstring.
REGEX_FALLBACK = "example"


def _resolve_ref(ref: str, root: Any) -> Any:
    """Follow a local JSON pointer such as `#/$defs/Item` or `#/definitions/Item`."""
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    """Fold `allOf` members (with refs resolved) into one schema."""
    merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "allOf"}
    for member in schema["allOf"]:
        if isinstance(member, dict) and "$ref" in member:
            member = _resolve_ref(member["$ref"], root)
        if not isinstance(member, dict):
            continue
        if "allOf" in member:
            member = _merge_all_of(member, root)
        for key, value in member.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _string_instance(schema: dict[str, Any]) -> str:
    """A string honouring format, pattern and length bounds where possible."""
    value = "example"
    if isinstance(schema.get("format"), str) and schema["format"] in _FORMATS:
        value = _FORMATS[schema["format"]]
    if isinstance(schema.get("pattern"), str):
        matched = regex_instance(schema["pattern"], search=True)
        if matched is not None:
            value = matched
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(value) < min_length:
        value = value + "x" * (min_length - len(value))
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(value) > max_length:
        value = value[:max_length]
    return value


def _number_instance(schema: dict[str, Any], integer: bool) -> int | float:
    """1 (or 1.5), moved into the schema's bounds and onto its multipleOf grid."""
    value: float = 1 if integer else 1.5
    low = schema.get("minimum")
    high = schema.get("maximum")
    exclusive_low = schema.get("exclusiveMinimum")
    exclusive_high = schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if isinstance(exclusive_low, int | float) and not isinstance(exclusive_low, bool) and value <= exclusive_low:
        value = exclusive_low + step
    if isinstance(low, int | float) and not isinstance(low, bool) and value < low:
        value = low
    if isinstance(exclusive_high, int | float) and not isinstance(exclusive_high, bool) and value >= exclusive_high:
        value = exclusive_high - step
    if isinstance(high, int | float) and not isinstance(high, bool) and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    if integer:
        return math.ceil(value)
    return float(value)


def json_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small JSON value that validates against `schema` (common keywords; refs to $defs/definitions)."""
    if root is None:
        root = schema
    if schema is True or schema == {}:
        return "example"
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return json_instance(_resolve_ref(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("allOf"), list):
        return json_instance(_merge_all_of(schema, root), root, depth + 1)
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return json_instance((non_null or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        raw_properties = schema.get("properties")
        properties: dict[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
        raw_required = schema.get("required")
        required: list[Any] = raw_required if isinstance(raw_required, list) else []
        result: dict[str, Any] = {}
        for name, sub in properties.items():
            if depth < _FULL_DEPTH or name in required:
                result[name] = json_instance(sub, root, depth + 1)
        for name in required:
            if isinstance(name, str) and name not in result:
                result[name] = "example"
        return result
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [json_instance(item, root, depth + 1) for item in prefix]
        min_items = schema.get("minItems", 0)
        count = min_items if isinstance(min_items, int) else 0
        if depth < _FULL_DEPTH:
            count = max(count, 1)
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        items = schema.get("items", {})
        return [json_instance(items, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string_instance(schema)
    if kind == "integer":
        return _number_instance(schema, integer=True)
    if kind == "number":
        return _number_instance(schema, integer=False)
    if kind == "boolean":
        return True
    return None


def _category_char(category: str) -> str:
    """A character of an sre category such as CATEGORY_DIGIT."""
    return {
        "CATEGORY_DIGIT": "0",
        "CATEGORY_NOT_DIGIT": "a",
        "CATEGORY_WORD": "a",
        "CATEGORY_NOT_WORD": " ",
        "CATEGORY_SPACE": " ",
        "CATEGORY_NOT_SPACE": "a",
    }.get(category, "a")


class _RegexWriter:
    """Walks an sre parse tree and writes the shortest string it can think of."""

    def __init__(self) -> None:
        self.groups: dict[int, str] = {}

    def write(self, items: Any) -> str:
        """The text for a sequence of sre items."""
        return "".join(self._item(str(op), av) for op, av in items)

    def _in_set(self, av: Any) -> str:
        entries = [(str(op), value) for op, value in av]
        if entries and entries[0][0] == "NEGATE":
            pattern_chars = [chr(c) for c in range(32, 127)]
            for candidate in ["a", "A", "0", " ", "_", "-", *pattern_chars]:
                if not any(self._set_matches(op, value, candidate) for op, value in entries[1:]):
                    return candidate
            return "\u00e9"
        for op, value in entries:
            if op == "LITERAL":
                return chr(value)
            if op == "RANGE":
                return chr(value[0])
            if op == "CATEGORY":
                return _category_char(str(value))
        return "a"

    @staticmethod
    def _set_matches(op: str, value: Any, char: str) -> bool:
        if op == "LITERAL":
            return bool(chr(value) == char)
        if op == "RANGE":
            return bool(value[0] <= ord(char) <= value[1])
        if op == "CATEGORY":
            probe = {
                "CATEGORY_DIGIT": r"\d",
                "CATEGORY_NOT_DIGIT": r"\D",
                "CATEGORY_WORD": r"\w",
                "CATEGORY_NOT_WORD": r"\W",
                "CATEGORY_SPACE": r"\s",
                "CATEGORY_NOT_SPACE": r"\S",
            }.get(str(value))
            return probe is not None and re.fullmatch(probe, char) is not None
        return False

    def _item(self, op: str, av: Any) -> str:
        if op == "LITERAL":
            return chr(av)
        if op == "NOT_LITERAL":
            return "a" if av != ord("a") else "b"
        if op == "ANY":
            return "a"
        if op == "IN":
            return self._in_set(av)
        if op == "BRANCH":
            return self.write(av[1][0])
        if op == "SUBPATTERN":
            group, _add, _del, sub = av
            text = self.write(sub)
            if group is not None:
                self.groups[group] = text
            return text
        if op == "ATOMIC_GROUP":
            return self.write(av)
        if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = av
            return self.write(sub) * int(low)
        if op == "GROUPREF":
            return str(self.groups.get(av, ""))
        if op == "CATEGORY":
            return _category_char(str(av))
        # AT (anchors), ASSERT, ASSERT_NOT and the rest write nothing; the final check catches misses.
        return ""


def regex_instance(pattern: str, *, search: bool = False) -> str | None:
    """A string matching `pattern` (full match, or `re.search` when `search`), or None if not found."""
    try:
        compiled = re.compile(pattern)
        # re._parser is private but stable across 3.11-3.13; failures fall back to None.
        parser = importlib.import_module("re._parser")
        text = _RegexWriter().write(parser.parse(pattern))
    except (re.error, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
        return None
    matched = compiled.search(text) if search else compiled.fullmatch(text)
    return text if matched is not None else None


def grammar_reply(kind: str, value: Any) -> str:
    """The reply text for a validated grammar: `kind` is "json" (value: schema) or "regex"."""
    if kind == "json":
        return json.dumps(json_instance(value), separators=(",", ":"), ensure_ascii=False)
    text = regex_instance(str(value))
    return REGEX_FALLBACK if text is None else text
