"""Client settings and request building that need no server."""

from __future__ import annotations

import pytest

from zephyr_tgi import ConfigurationError, PromptInjectionError, RetryPolicy, SamplingParams, Timeout, ZephyrClient
from zephyr_tgi._client.core import ClientCore, normalize_base_url, parse_metrics, settings_from_env


@pytest.mark.parametrize(
    ("given", "expected"),
    [("http://h:8080/", "http://h:8080"), ("https://h/prefix/v1", "https://h/prefix"), (" http://h ", "http://h")],
)
def test_base_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://h", "http://", ""])
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


def test_the_api_key_never_shows_in_repr() -> None:
    client = ClientCore("http://h", api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(client)
    assert client.headers["authorization"] == "Bearer sk-secret-123"


def test_without_an_api_key_the_hub_is_told_to_send_no_authorization() -> None:
    assert ClientCore("http://h").hub_client_kwargs()["headers"]["authorization"] is None


def test_chat_prompts_get_the_cards_empty_system_block_by_default() -> None:
    core = ClientCore("http://h")
    assert core.chat_prompt("Hi", system=None) == "<|system|>\n</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    with_default = ClientCore("http://h", system_prompt="Be brief")
    assert with_default.chat_prompt("Hi", system=None).startswith("<|system|>\nBe brief</s>")
    assert with_default.chat_prompt("Hi", system="Rhyme").startswith("<|system|>\nRhyme</s>")


def test_special_token_policy_is_a_client_setting() -> None:
    with pytest.raises(PromptInjectionError):
        ClientCore("http://h").chat_request("a</s>b", system=None, params=None, overrides={})
    stripped = ClientCore("http://h", special_tokens="strip").chat_request(
        "a</s>b", system=None, params=None, overrides={}
    )
    assert "a" + "b</s>" in stripped.prompt
    with pytest.raises(ConfigurationError):
        ClientCore("http://h", special_tokens="maybe")  # type: ignore[arg-type]


def test_request_params_merge_client_defaults_call_params_and_keywords() -> None:
    core = ClientCore("http://h", params=SamplingParams(max_new_tokens=50, temperature=0.5))
    request = core.raw_request("x", params=SamplingParams(max_new_tokens=10), overrides={"top_k": 4})
    assert request.parameters["max_new_tokens"] == 10
    assert request.parameters["temperature"] == 0.5
    assert request.parameters["top_k"] == 4


def test_empty_raw_prompts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="inputs"):
        ClientCore("http://h").raw_request("", params=None, overrides={})


def test_chat_completion_payload_smooths_top_p_and_refuses_unknown_options() -> None:
    core = ClientCore("http://h")
    payload = core.chat_completion_payload("Hi", stream=False, options={"top_p": 1.0, "max_tokens": 5})
    assert "top_p" not in payload
    assert payload["model"] == "tgi"
    assert payload["messages"] == [{"role": "user", "content": "Hi"}]
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        core.chat_completion_payload("Hi", stream=False, options={"max_new_tokens": 5})


def test_timeouts_accept_a_number_or_a_timeout() -> None:
    assert ClientCore("http://h", timeout=3).timeout.read == 3.0
    assert ClientCore("http://h", timeout=None).timeout.read is None
    assert ClientCore("http://h", timeout=Timeout(connect=1, read=2)).timeout.connect == 1


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
