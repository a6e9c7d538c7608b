"""Structured output: TGI grammars from schemas and regexes, and checking what came back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from .._errors import ConfigurationError, StructuredOutputError
from .params import Grammar

__all__ = ["SchemaInput", "grammar_for_schema", "parse_json_answer", "parse_regex_answer"]

SchemaInput = type[BaseModel] | Mapping[str, Any]


def grammar_for_schema(schema: SchemaInput) -> Grammar:
    """TGI's JSON grammar for a pydantic model class or a JSON-schema dict.

    Raises:
        ConfigurationError: the schema has no `properties` (TGI refuses such grammars).
    """
    if not isinstance(schema, Mapping) and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigurationError(f"schema must be a pydantic model class or a JSON-schema dict, got {schema!r}")
    try:
        return Grammar.json_schema(schema)
    except ConfigurationError as exc:
        raise ConfigurationError(f"invalid schema for a JSON grammar: {exc}") from exc


def parse_json_answer(text: str, schema: SchemaInput) -> Any:
    """The answer as a model instance (pydantic schema) or a dict (dict schema), checked against the schema.

    A dict schema is checked for being a JSON object with every `required` property; pass a pydantic model for
    full validation.

    Raises:
        StructuredOutputError: the text is not JSON, or not valid for the schema; `raw_text` keeps it.
    """
    if isinstance(schema, type):
        try:
            return schema.model_validate_json(text)
        except ValidationError as exc:
            raise StructuredOutputError(
                f"the answer does not validate as {schema.__name__}: {exc.error_count()} error(s), first: "
                f"{exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc'])) or 'top level'}",
                raw_text=text,
            ) from exc
    try:
        data = pydantic_core.from_json(text)  # a nesting limit, where json.loads would raise RecursionError
    except ValueError as exc:
        raise StructuredOutputError(f"the answer is not JSON: {exc}", raw_text=text) from exc
    if not isinstance(data, dict):
        raise StructuredOutputError(f"the answer is JSON but not an object: {type(data).__name__}", raw_text=text)
    missing = [name for name in schema.get("required", ()) if name not in data]
    if missing:
        raise StructuredOutputError(f"the answer lacks required properties {missing}", raw_text=text)
    return data


def parse_regex_answer(text: str, pattern: str) -> str:
    """The answer, checked to match `pattern` as a whole.

    Raises:
        StructuredOutputError: it does not match; `raw_text` keeps it.
    """
    if re.fullmatch(pattern, text) is None:
        raise StructuredOutputError(f"the answer does not match {pattern!r}", raw_text=text)
    return text
