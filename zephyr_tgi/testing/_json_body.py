"""Request bodies as axum 0.7.9's `Json` extractor reads them: content type, serde_json syntax, positions.

The scanner runs only on error paths, to report what serde_json would: the message, and the line and
column where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = [
    "MISSING_CONTENT_TYPE",
    "BodyError",
    "Duplicates",
    "Path",
    "ScanError",
    "Scanner",
    "location_after",
    "read_json_body",
]

MISSING_CONTENT_TYPE = "Expected request with `Content-Type: application/json`"
_SYNTAX_PREFIX = "Failed to parse the request body as JSON: "


class BodyError(Exception):
    """An extractor rejection: plain-text body with a status (400, 415, 422)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


Path = tuple[str | int, ...]


class ScanError(Exception):
    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


class Scanner:
    """A strict JSON scanner that records the character span of every value by its path."""

    _WS = " \t\n\r"

    def __init__(self, text: str, *, trailing_ok: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.trailing_ok = trailing_ok
        self.spans: dict[Path, tuple[int, int]] = {}
        # (object path, key) -> where the key's second occurrence ends.
        self.repeats: dict[tuple[Path, str], int] = {}

    def scan(self) -> None:
        self._ws()
        self._value(())
        self._ws()
        if self.pos < len(self.text) and not self.trailing_ok:
            raise ScanError("trailing characters", self.pos)

    def _ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in self._WS:
            pos += 1
        self.pos = pos

    def _eof(self, what: str) -> NoReturn:
        raise ScanError(f"EOF while parsing {what}", len(self.text))

    def _value(self, path: Path) -> None:
        if self.pos >= len(self.text):
            self._eof("a value")
        start = self.pos
        char = self.text[self.pos]
        if char == "{":
            self._object(path)
        elif char == "[":
            self._array(path)
        elif char == '"':
            self._string()
        elif char == "-" or char.isdigit():
            self._number()
        elif char in "tfn":
            word = {"t": "true", "f": "false", "n": "null"}[char]
            for offset, expected in enumerate(word):
                index = start + offset
                if index >= len(self.text):
                    self._eof("a value")
                if self.text[index] != expected:
                    raise ScanError("expected ident", index)
            self.pos = start + len(word)
        else:
            raise ScanError("expected value", start)
        self.spans[path] = (start, self.pos)

    def _object(self, path: Path) -> None:
        self.pos += 1
        self._ws()
        if self.pos >= len(self.text):
            self._eof("an object")
        if self.text[self.pos] == "}":
            self.pos += 1
            return
        while True:
            if self.pos >= len(self.text):
                self._eof("an object")
            if self.text[self.pos] != '"':
                raise ScanError("key must be a string", self.pos)
            key_start = self.pos
            self._string()
            key = json.loads(self.text[key_start : self.pos])
            if (*path, key) in self.spans and (path, key) not in self.repeats:
                self.repeats[(path, key)] = self.pos
            self._ws()
            if self.pos >= len(self.text):
                self._eof("an object")
            if self.text[self.pos] != ":":
                raise ScanError("expected `:`", self.pos)
            self.pos += 1
            self._ws()
            self._value((*path, key))
            self._ws()
            if self.pos >= len(self.text):
                self._eof("an object")
            char = self.text[self.pos]
            self.pos += 1
            if char == "}":
                return
            if char != ",":
                raise ScanError("expected `,` or `}`", self.pos - 1)
            self._ws()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                raise ScanError("trailing comma", self.pos)

    def _array(self, path: Path) -> None:
        self.pos += 1
        self._ws()
        if self.pos >= len(self.text):
            self._eof("a list")
        if self.text[self.pos] == "]":
            self.pos += 1
            return
        index = 0
        while True:
            self._value((*path, index))
            index += 1
            self._ws()
            if self.pos >= len(self.text):
                self._eof("a list")
            char = self.text[self.pos]
            self.pos += 1
            if char == "]":
                return
            if char != ",":
                raise ScanError("expected `,` or `]`", self.pos - 1)
            self._ws()
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                raise ScanError("trailing comma", self.pos)

    def _string(self) -> None:
        text = self.text
        pos = self.pos + 1
        while True:
            if pos >= len(text):
                self._eof("a string")
            char = text[pos]
            if char == '"':
                self.pos = pos + 1
                return
            if char == "\\":
                if pos + 1 >= len(text):
                    self._eof("a string")
                escape = text[pos + 1]
                if escape == "u":
                    digits = text[pos + 2 : pos + 6]
                    if len(digits) < 4 and pos + 2 + len(digits) >= len(text):
                        self._eof("a string")
                    if len(digits) < 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                        raise ScanError("invalid escape", pos + 2)
                    pos += 6
                    continue
                if escape not in '"\\/bfnrt':
                    raise ScanError("invalid escape", pos + 1)
                pos += 2
                continue
            if ord(char) < 0x20:
                raise ScanError("control character (\\u0000-\\u001F) found while parsing a string", pos)
            pos += 1

    def _number(self) -> None:
        text = self.text
        pos = self.pos
        if text[pos] == "-":
            pos += 1
        if pos >= len(text):
            self._eof("a value")
        if not text[pos].isdigit():
            raise ScanError("invalid number", pos)
        if text[pos] == "0":
            pos += 1
            if pos < len(text) and text[pos].isdigit():
                raise ScanError("invalid number", pos)
        while pos < len(text) and text[pos].isdigit():
            pos += 1
        if pos < len(text) and text[pos] == ".":
            pos += 1
            if pos >= len(text):
                self._eof("a value")
            if not text[pos].isdigit():
                raise ScanError("invalid number", pos)
            while pos < len(text) and text[pos].isdigit():
                pos += 1
        if pos < len(text) and text[pos] in "eE":
            pos += 1
            if pos < len(text) and text[pos] in "+-":
                pos += 1
            if pos >= len(text):
                self._eof("a value")
            if not text[pos].isdigit():
                raise ScanError("invalid number", pos)
            while pos < len(text) and text[pos].isdigit():
                pos += 1
        self.pos = pos


def location_after(text: str, consumed: int) -> str:
    """serde_json's " at line L column C" once `consumed` characters have been read."""
    last = max(consumed - 1, 0)
    line = text.count("\n", 0, last) + 1
    line_start = text.rfind("\n", 0, last) + 1
    return f" at line {line} column {max(consumed - line_start, 0)}"


def _location(text: str, index: int) -> str:
    """The location of an error at character `index` (len(text) for end of input)."""
    return location_after(text, min(index + 1, len(text)))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(name)


class Duplicates(dict[str, Any]):
    """A JSON object whose text repeated a key (serde rejects repeats of a struct's fields)."""

    repeated: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    flagged = Duplicates(obj)
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _value in pairs:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    flagged.repeated = tuple(repeated)
    return flagged


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
_WHITESPACE = " \t\n\r"


def read_json_body(headers: Mapping[str, str], body: bytes) -> Any:
    """Content-Type check (415) then JSON syntax (400), like axum 0.7.9's `Json` extractor.

    axum 0.7.9 parses one JSON value and never checks what follows it, so trailing bytes are ignored.
    """
    content_type = headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = mime.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise BodyError(415, MISSING_CONTENT_TYPE)
    # Bytes that are not UTF-8 matter only inside the value; surrogate escapes mark them.
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        # serde_json rejects NaN/Infinity, which Python's json would accept.
        value, end = _JSON_DECODER.raw_decode(text, start)
    except ValueError:
        value, end = _NOT_JSON, len(text)
    bad_byte = next((i for i, char in enumerate(text[:end]) if "\udc80" <= char <= "\udcff"), None)
    if bad_byte is not None:
        prefix = text[:bad_byte]
        raise BodyError(400, _SYNTAX_PREFIX + "invalid unicode code point" + _location(prefix, len(prefix)))
    if value is not _NOT_JSON:
        return value
    scanner = Scanner(text, trailing_ok=True)
    try:
        scanner.scan()
    except ScanError as exc:
        raise BodyError(400, _SYNTAX_PREFIX + exc.message + _location(text, exc.index)) from None
    raise BodyError(400, _SYNTAX_PREFIX + "expected value" + _location(text, 0))


_NOT_JSON = object()
