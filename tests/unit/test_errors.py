"""Error mapping: TGI's error_type first, then message, then status; never crashes on odd bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zephyr_tgi import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    GenerationError,
    IncompleteGenerationError,
    InputValidationError,
    OverloadedError,
    ServerUnavailableError,
    ZephyrTGIError,
)
from zephyr_tgi._errors import Redactor, from_response, from_stream_event, parse_retry_after, redact


@pytest.mark.parametrize(
    ("status", "body", "cls", "error_type"),
    [
        (
            422,
            {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0", "error_type": "validation"},
            InputValidationError,
            "validation",
        ),
        (
            424,
            {"error": "Request failed during generation: CUDA OOM", "error_type": "generation"},
            GenerationError,
            "generation",
        ),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, OverloadedError, "overloaded"),
        (
            500,
            {"error": "Incomplete generation", "error_type": "incomplete_generation"},
            IncompleteGenerationError,
            "incomplete_generation",
        ),
        (
            422,
            {"error": "Template error: template not found", "error_type": "template_error"},
            InputValidationError,
            "template_error",
        ),
        (503, {"error": "unhealthy", "error_type": "healthcheck"}, ServerUnavailableError, "healthcheck"),
    ],
)
def test_tgi_json_errors_map_by_error_type(status: int, body: dict[str, str], cls: type, error_type: str) -> None:
    error = from_response(status, json.dumps(body).encode())
    assert type(error) is cls
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.message.startswith(body["error"])
    assert error.body == json.dumps(body)


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, b"", AuthenticationError),
        (
            422,
            b"Failed to deserialize the JSON body into the target type: missing field `inputs`",
            InputValidationError,
        ),
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ServerUnavailableError),
        (504, b"upstream timed out", ServerUnavailableError),
        (418, b"teapot", APIStatusError),
        (599, b"\xff\xfe not utf8", ServerUnavailableError),
    ],
)
def test_non_json_bodies_map_by_status_and_keep_the_body(status: int, body: bytes, cls: type) -> None:
    error = from_response(status, body)
    assert type(error) is cls
    assert error.status_code == status
    assert f"HTTP {status}" in error.message


def test_an_empty_401_says_what_to_do() -> None:
    error = from_response(401, b"")
    assert "api_key" in str(error)


def test_native_in_band_stream_error_maps_like_the_http_error() -> None:
    event = {"error": "Model is overloaded", "error_type": "overloaded"}
    error = from_stream_event(event, json.dumps(event))
    assert isinstance(error, OverloadedError)
    assert error.status_code == 429


def test_openai_in_band_error_maps_by_message_not_the_hardcoded_422() -> None:
    event = {"error": {"message": "Request failed during generation: boom", "http_status_code": 422}}
    error = from_stream_event(event, json.dumps(event))
    assert isinstance(error, GenerationError)
    assert error.status_code == 424


def test_retry_after_in_seconds_milliseconds_and_dates() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert from_response(429, b"", {"Retry-After": "3"}).retry_after == 3.0


def test_deeply_nested_json_bodies_are_previewed_not_a_recursion_error() -> None:
    error = from_response(422, b"[" * 100_000)
    assert isinstance(error, InputValidationError)
    assert error.message.startswith("HTTP 422: [[[")


def test_bearer_tokens_keys_and_url_passwords_are_redacted_from_error_bodies() -> None:
    page = (
        b"<html>upstream refused: request headers were authorization: Bearer sk-live-abcdef123456, "
        b"x-api-key: KEY-0123456789, origin http://admin:hunter2secret@10.0.0.1/ basic dXNlcjpwYXNzd29yZA==</html>"
    )
    error = from_response(502, page, redactor=Redactor(["KEY-0123456789"]))
    for secret in ("sk-live-abcdef123456", "KEY-0123456789", "hunter2secret", "dXNlcjpwYXNzd29yZA=="):
        assert secret not in str(error)
        assert secret not in (error.body or "")
        assert secret not in repr(error)
    assert redact("no secrets here") == "no secrets here"


def test_every_error_is_a_zephyr_error_and_timeouts_are_connection_errors() -> None:
    assert issubclass(APITimeoutError, APIConnectionError)
    for cls in (AuthenticationError, InputValidationError, OverloadedError, GenerationError):
        assert issubclass(cls, ZephyrTGIError)


@given(status=st.integers(min_value=400, max_value=599), body=st.binary(max_size=300))
def test_mapping_never_crashes_on_arbitrary_bodies(status: int, body: bytes) -> None:
    error = from_response(status, body, {"retry-after": "x"})
    assert isinstance(error, APIStatusError)
    assert error.status_code == status
    repr(error)


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["error", "error_type", "message", "http_status_code"]), children, max_size=4
            )
        ),
        max_leaves=10,
    )
)
def test_mapping_never_crashes_on_arbitrary_json(payload: object) -> None:
    error = from_response(500, json.dumps(payload))
    assert isinstance(error, APIStatusError)
    if isinstance(payload, dict) and "error" in payload:
        from_stream_event(payload, json.dumps(payload))
