"""Client settings and request building that need no server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from zephyr_tgi import ConfigurationError, PromptInjectionError, RetryPolicy, SamplingParams, Timeout, ZephyrClient
from zephyr_tgi._client.core import (
    Endpoint,
    chat_completion_payload,
    chat_prompt,
    make_config,
    native_request,
    normalize_base_url,
    parse_metrics,
    raw_prompt,
    settings_from_env,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("http://h:8080/", "http://h:8080"), ("https://h/prefix/v1", "https://h/prefix"), (" http://h ", "http://h")],
)
def test_base_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_base_url(given) == (expected, None)


def test_a_password_in_the_url_is_kept_for_sending_and_hidden_when_shown() -> None:
    config = make_config("http://user:PASSWORD@h:8080")
    assert config.base_url == "http://user:PASSWORD@h:8080"
    assert config.shown_url == "http://user:***@h:8080"
    assert "PASSWORD" not in config.redactor.scrub("visit http://user:PASSWORD@h:8080/x")


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://h", "http://", "", None, 8080, "http://h:port"])
def test_bad_base_urls_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        normalize_base_url(bad)


def test_settings_come_from_zephyr_tgi_variables_only() -> None:
    settings = settings_from_env(
        {
            "ZEPHYR_TGI_URL": "http://h",
            "ZEPHYR_TGI_API_KEY": "k",
            "ZEPHYR_TGI_TIMEOUT": "12.5",
            "ZEPHYR_TGI_MAX_ATTEMPTS": "2",
            "ZEPHYR_TGI_SYSTEM_PROMPT": "",
            "HF_TOKEN": "hf_x",
        }
    )
    assert settings == {
        "base_url": "http://h",
        "api_key": "k",
        "timeout": 12.5,
        "retry": RetryPolicy(max_attempts=2),
        "system_prompt": "",
    }


@pytest.mark.parametrize(("name", "value"), [("ZEPHYR_TGI_TIMEOUT", "soon"), ("ZEPHYR_TGI_MAX_ATTEMPTS", "0")])
def test_malformed_variables_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        settings_from_env({name: value})


def test_from_env_without_a_url_explains_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPHYR_TGI_URL", raising=False)
    with pytest.raises(ConfigurationError, match="ZEPHYR_TGI_URL"):
        ZephyrClient.from_env()


def test_from_env_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPHYR_TGI_URL", "http://env:1")
    monkeypatch.setenv("ZEPHYR_TGI_TIMEOUT", "7")
    with ZephyrClient.from_env(base_url="http://arg:2") as client:
        assert client.base_url == "http://arg:2"
        assert client.timeout.read == 7.0


def test_the_api_key_never_shows_in_repr_and_is_sent_as_a_bearer_token() -> None:
    with ZephyrClient("http://h", api_key="sk-secret-123") as client:
        assert "sk-secret-123" not in repr(client)
    assert make_config("http://h", api_key="sk-secret-123").headers["authorization"] == "Bearer sk-secret-123"


def test_without_an_api_key_no_authorization_is_sent() -> None:
    assert "authorization" not in make_config("http://h").headers


def test_chat_prompts_get_the_cards_empty_system_block_by_default() -> None:
    config = make_config("http://h")
    assert chat_prompt(config, "Hi", system=None) == "<|system|>\n</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    with_default = make_config("http://h", system_prompt="Be brief")
    assert chat_prompt(with_default, "Hi", system=None).startswith("<|system|>\nBe brief</s>")
    assert chat_prompt(with_default, "Hi", system="Rhyme").startswith("<|system|>\nRhyme</s>")


def test_special_token_policy_is_a_client_setting() -> None:
    with pytest.raises(PromptInjectionError):
        chat_prompt(make_config("http://h"), "a</s>b", system=None)
    stripped = chat_prompt(make_config("http://h", special_tokens="strip"), "a</s>b", system=None)
    assert "a" + "b</s>" in stripped
    with pytest.raises(ConfigurationError):
        make_config("http://h", special_tokens="maybe")  # type: ignore[arg-type]


def test_request_params_merge_client_defaults_call_params_and_keywords() -> None:
    config = make_config("http://h", params=SamplingParams(max_new_tokens=50, temperature=0.5))
    request = native_request(config, Endpoint(), "x", SamplingParams(max_new_tokens=10), {"top_k": 4})
    assert request.parameters["max_new_tokens"] == 10
    assert request.parameters["temperature"] == 0.5
    assert request.parameters["top_k"] == 4


def test_empty_raw_prompts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="inputs"):
        raw_prompt("")


def test_a_value_json_cannot_carry_is_the_callers_error_before_sending() -> None:
    config = make_config("http://h")
    request = native_request(config, Endpoint(), "x", None, {"grammar": {"type": "json", "value": {"properties": {1}}}})
    with pytest.raises(ConfigurationError, match="cannot be sent as JSON"):
        request.payload()


def test_chat_completion_payload_smooths_top_p_and_refuses_unknown_options() -> None:
    config = make_config("http://h")
    payload = chat_completion_payload(config, "Hi", stream=False, options={"top_p": 1.0, "max_tokens": 5})
    assert "top_p" not in payload
    assert payload["model"] == "tgi"
    assert payload["messages"] == [{"role": "user", "content": "Hi"}]
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        chat_completion_payload(config, "Hi", stream=False, options={"max_new_tokens": 5})


def test_timeouts_accept_a_number_or_a_timeout() -> None:
    assert make_config("http://h", timeout=3).timeout.read == 3.0
    assert make_config("http://h", timeout=None).timeout.read is None
    assert make_config("http://h", timeout=Timeout(connect=1, read=2)).timeout.connect == 1
    with pytest.raises(ConfigurationError):
        make_config("http://h", timeout="soon")  # type: ignore[arg-type]


def test_bad_settings_are_configuration_errors_with_pydantics_error_as_cause() -> None:
    import pydantic

    misspelt: dict[str, Any] = {"temprature": 1}
    builds: list[Callable[[], object]] = [
        lambda: Timeout(read=-1),
        lambda: RetryPolicy(max_attempts=0),
        lambda: SamplingParams(**misspelt),
    ]
    for build in builds:
        with pytest.raises(ConfigurationError) as info:
            build()
        assert isinstance(info.value.__cause__, pydantic.ValidationError)
    with pytest.raises(ConfigurationError, match="base_url must be a URL string"):
        ZephyrClient(None)  # type: ignore[arg-type]


def test_prometheus_text_is_parsed() -> None:
    text = (
        '# HELP x\n# TYPE x counter\ntgi_request_count 5\ntgi_request_failure{err="validation"} 2\nbad line\n'
        'tgi_queue_size{a="b c"} 0 1700000000\n'
    )
    assert parse_metrics(text) == {
        "tgi_request_count": 5.0,
        'tgi_request_failure{err="validation"}': 2.0,
        'tgi_queue_size{a="b c"}': 0.0,
    }
