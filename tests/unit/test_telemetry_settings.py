"""Telemetry settings, the attributes derived from requests, and the off path that costs nothing (no network)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zephyr_tgi import ConfigurationError, SamplingParams, Telemetry, ZephyrClient
from zephyr_tgi._client import flows
from zephyr_tgi._telemetry._describe import (
    CHAT,
    TEXT_COMPLETION,
    chat_completion_operation,
    native_operation,
    server_attributes,
)
from zephyr_tgi._telemetry.settings import CAPTURE_CONTENT_ENV, instrumentation_for

_UNUSED_URL = "http://127.0.0.1:9"  # never contacted: these tests send nothing


@pytest.mark.parametrize("setting", [False, None])
def test_telemetry_off_builds_nothing(setting: bool | None) -> None:
    assert instrumentation_for(setting, {}) is None


def test_telemetry_off_hands_the_flow_to_the_driver_unwrapped() -> None:
    with ZephyrClient(_UNUSED_URL) as client:
        request = client._chat_request("Hi", None, None, {})
        flow = flows.generate(client._ctx, request)
        assert client._traced_chat(flow, request, "Hi", None, stream=False) is flow
        assert client._traced_generate(flow, request, stream=False) is flow
        assert client._traced_chat_completion(flow, {"messages": []}, stream=False) is flow
        flow.close()


@pytest.mark.parametrize("setting", ["yes", 1, object()])
def test_a_malformed_telemetry_setting_is_a_configuration_error(setting: object) -> None:
    with pytest.raises(ConfigurationError, match="telemetry must be"):
        ZephyrClient(_UNUSED_URL, telemetry=setting)  # type: ignore[arg-type]


def test_a_blank_model_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        instrumentation_for(Telemetry(model=" "), {})


@pytest.mark.parametrize(
    ("value", "captured"),
    [
        ("true", True),
        ("TRUE", True),
        ("false", False),
        ("SPAN_ONLY", True),
        ("span_and_event", True),
        ("EVENT_ONLY", False),
        ("NO_CONTENT", False),
        ("", False),
    ],
)
def test_the_capture_variable_takes_the_official_instrumentations_values(value: str, captured: bool) -> None:
    instrumentation = instrumentation_for(True, {CAPTURE_CONTENT_ENV: value})
    assert instrumentation is not None
    assert instrumentation.capture_content is captured


def test_an_unknown_capture_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=CAPTURE_CONTENT_ENV):
        instrumentation_for(True, {CAPTURE_CONTENT_ENV: "maybe"})


def test_telemetry_without_the_extra_says_what_to_install() -> None:
    # `None` in sys.modules makes importing opentelemetry fail as it does when the extra is not installed.
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from zephyr_tgi import ConfigurationError, ZephyrClient\n"
        "try:\n"
        "    ZephyrClient('http://127.0.0.1:9', telemetry=True)\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "pip install 'zephyr-tgi[otel]'" in shown.stdout


def test_the_span_name_is_the_operation_then_the_model() -> None:
    params = SamplingParams()
    assert native_operation(CHAT, params, model=None, stream=False).span_name == "chat"
    named = native_operation(TEXT_COMPLETION, params, model="zephyr", stream=True)
    assert named.span_name == "text_completion zephyr"
    assert named.attributes["gen_ai.request.model"] == "zephyr"


def test_chat_completion_ignores_tgis_placeholder_model_and_keeps_a_real_one() -> None:
    placeholder = chat_completion_operation({"model": "tgi", "messages": []}, model=None, stream=False, capture=False)
    assert "gen_ai.request.model" not in placeholder.attributes
    named = chat_completion_operation({"model": "served", "messages": []}, model="x", stream=False, capture=False)
    assert named.span_name == "chat served"


def test_chat_completion_content_keeps_text_parts_and_the_system_apart() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        "n": 2,
    }
    operation = chat_completion_operation(payload, model=None, stream=False, capture=True)
    assert json.loads(operation.content["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    assert json.loads(operation.content["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
    ]
    assert operation.attributes["gen_ai.request.choice.count"] == 2
    assert chat_completion_operation(payload, model=None, stream=False, capture=False).content == {}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/generate", {"server.address": "127.0.0.1", "server.port": 8080}),
        ("https://tgi.example.com/generate", {"server.address": "tgi.example.com", "server.port": 443}),
        ("http://[::1]/generate", {"server.address": "::1", "server.port": 80}),
    ],
)
def test_the_server_address_and_port_come_from_the_request_url(url: str, expected: dict[str, object]) -> None:
    assert server_attributes(url) == expected
