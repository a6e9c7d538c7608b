"""Credentials: the TGI api key is sent when given, a Hugging Face token never leaks to a TGI URL."""

from __future__ import annotations

import logging

import pytest

from tests.http.conftest import Twin
from zephyr_tgi import AuthenticationError
from zephyr_tgi.testing import TGIEmulator

PLANTED = "hf_PLANTEDsecretTOKEN0123456789"


async def test_no_hugging_face_token_is_sent_to_a_tgi_url(
    kind: str, emulator: TGIEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    twin = Twin(kind, emulator.url)
    with caplog.at_level(logging.DEBUG):
        await twin.call("chat", "Hi")
        await twin.stream("chat_stream", "Hi")
        await twin.call("chat_completion", "Hi", max_tokens=2)
        await twin.stream("chat_completion", "Hi", stream=True, max_tokens=2)
        await twin.call("info")
        await twin.call("tokenize", "Hi")
    await twin.close()
    assert emulator.stats.requests
    for request in emulator.stats.requests:
        assert "authorization" not in request.headers, request.path
        assert PLANTED not in str(request.headers)
    assert PLANTED not in caplog.text


async def test_the_api_key_authenticates_every_route(kind: str) -> None:
    with TGIEmulator(api_key="tgi-key-1") as emulator:
        twin = Twin(kind, emulator.url, api_key="tgi-key-1")
        assert (await twin.call("chat", "Hi")).text
        assert (await twin.stream("chat_stream", "Hi"))[-1].result is not None
        assert (await twin.call("chat_completion", "Hi", max_tokens=2)).text
        await twin.close()
        assert {r.headers.get("authorization") for r in emulator.stats.requests if r.path != "/info"} == {
            "Bearer tgi-key-1"
        }
        assert "tgi-key-1" not in repr(twin.client)


async def test_a_missing_api_key_is_an_authentication_error(kind: str) -> None:
    with TGIEmulator(api_key="tgi-key-1") as emulator:
        twin = Twin(kind, emulator.url)
        with pytest.raises(AuthenticationError, match="api_key"):
            await twin.call("chat", "Hi")
        with pytest.raises(AuthenticationError):
            await twin.stream("chat_stream", "Hi")
        await twin.close()
