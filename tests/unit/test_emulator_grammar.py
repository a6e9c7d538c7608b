"""Replies for constrained generation validate against their schema or match their regex."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from zephyr_tgi.testing._grammar import REGEX_FALLBACK, grammar_reply, json_instance, regex_instance

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["name", "age"],
    },
    "bounds": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 3, "maximum": 5},
            "count": {"type": "integer", "exclusiveMinimum": 10, "multipleOf": 4},
            "code": {"type": "string", "minLength": 10, "maxLength": 12},
            "tiny": {"type": "string", "maxLength": 2},
        },
    },
    "enum_const_format": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green"]},
            "version": {"const": 2},
            "email": {"type": "string", "format": "email"},
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
        },
        "required": ["color", "version", "email", "sku"],
    },
    "pydantic_defs": {
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["street"],
            },
            "Kind": {"enum": ["a", "b"], "type": "string"},
        },
        "type": "object",
        "properties": {
            "address": {"$ref": "#/$defs/Address"},
            "kind": {"$ref": "#/$defs/Kind"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "extra": {"allOf": [{"$ref": "#/$defs/Address"}]},
        },
        "required": ["address", "kind", "tags"],
    },
    "definitions_recursive": {
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                },
                "required": ["value"],
            }
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/definitions/Node"}},
        "required": ["root"],
    },
    "closed_nested": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
            "maybe": {"type": ["null", "integer"]},
        },
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_instance_validates_against_its_schema(name: str) -> None:
    schema = SCHEMAS[name]
    jsonschema.validate(json_instance(schema), schema)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_grammar_reply_is_compact_json_of_a_valid_instance(name: str) -> None:
    reply = grammar_reply("json", SCHEMAS[name])
    assert ": " not in reply
    assert ", " not in reply
    jsonschema.validate(json.loads(reply), SCHEMAS[name])


@pytest.mark.parametrize(
    "pattern",
    [
        r"\d{3}-\d{4}",
        r"(yes|no)",
        r"[a-z]+@[a-z]+\.com",
        r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)",
        r"[^abc]x?y*z+",
        r"(a)(b)\2\1",
        r"\w+\s\S",
        r"colou?r",
    ],
)
def test_regex_instance_fully_matches(pattern: str) -> None:
    text = regex_instance(pattern)
    assert text is not None
    assert re.fullmatch(pattern, text)


def test_an_uninvertible_regex_falls_back_to_a_literal() -> None:
    assert regex_instance(r"(?=abc)x") is None
    assert grammar_reply("regex", r"(?=abc)x") == REGEX_FALLBACK
