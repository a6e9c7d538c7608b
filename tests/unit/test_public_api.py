"""The public namespace and the twin clients stay in step."""

from __future__ import annotations

import inspect

import zephyr_tgi
from zephyr_tgi import AsyncZephyrClient, ZephyrClient


def test_all_is_sorted_complete_and_public() -> None:
    names = zephyr_tgi.__all__
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), n))  # ruff RUF022 order
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(zephyr_tgi, name), name
        assert not name.startswith("_") or name == "__version__"
    exported = {n for n in dir(zephyr_tgi) if not n.startswith("_") and not inspect.ismodule(getattr(zephyr_tgi, n))}
    assert exported - {"annotations"} <= set(names)


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_sync_and_async_clients_have_the_same_methods_and_parameters() -> None:
    sync, asynchronous = _public_methods(ZephyrClient), _public_methods(AsyncZephyrClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name


def test_async_methods_are_awaitable_where_the_sync_ones_return_values() -> None:
    for name in (
        "chat",
        "generate",
        "chat_completion",
        "info",
        "health",
        "wait_until_ready",
        "tokenize",
        "metrics",
        "close",
    ):
        assert inspect.iscoroutinefunction(getattr(AsyncZephyrClient, name)), name
    for name in ("chat_stream", "generate_stream"):
        assert not inspect.iscoroutinefunction(getattr(AsyncZephyrClient, name)), name


def test_every_public_name_loads_lazily_from_its_module() -> None:
    assert set(zephyr_tgi._LAZY) | {"__version__"} == set(zephyr_tgi.__all__)
    for name in zephyr_tgi.__all__:
        assert getattr(zephyr_tgi, name) is not None


def test_importing_the_package_loads_no_heavy_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, zephyr_tgi; print(sorted(m for m in ('httpx2', 'pydantic', 'docker', 'sentencepiece', "
        "'huggingface_hub.inference._client', 'opentelemetry') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_sync_and_async_conversations_have_the_same_methods() -> None:
    from zephyr_tgi import AsyncConversation, Conversation

    sync, asynchronous = _public_methods(Conversation), _public_methods(AsyncConversation)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name


_USER_FACING = {
    "base_url",
    "timeout",
    "retry",
    "params",
    "system_prompt",
    "special_tokens",
    "tokenizer",
    "budget",
    "limits",
    "engine",
    "endpoints",
    "metrics_summary",
    "inference_client",
    "chat_prompt",
    "with_options",
    "from_env",
    "close",
    "chat",
    "chat_stream",
    "generate",
    "generate_stream",
    "chat_completion",
    "chat_json",
    "chat_regex",
    "batch_chat",
    "perplexity",
    "info",
    "health",
    "wait_until_ready",
    "tokenize",
    "metrics",
    "count_tokens",
}


def test_dir_of_a_client_shows_what_users_call_and_no_plumbing() -> None:
    for cls in (ZephyrClient, AsyncZephyrClient):
        public = {name for name in dir(cls("http://127.0.0.1:1")) if not name.startswith("_")}
        assert public == _USER_FACING, cls.__name__


def test_settings_are_read_only() -> None:
    import pytest

    client = ZephyrClient("http://127.0.0.1:1")
    with pytest.raises(AttributeError):
        client.timeout = None  # type: ignore[misc, assignment]
    client.close()


def test_with_options_changes_settings_and_shares_the_pool() -> None:
    import pytest

    from zephyr_tgi import ConfigurationError, RetryPolicy, Timeout

    parent = ZephyrClient("http://127.0.0.1:1", api_key="sk-abcdef")
    child = parent.with_options(timeout=Timeout(deadline=3), retry=RetryPolicy.never())
    assert child.timeout.deadline == 3
    assert child.retry.max_attempts == 1
    assert child.base_url == parent.base_url
    assert child._transport is parent._transport  # one pool
    assert parent.timeout.deadline is None
    child.close()  # leaves the parent's pool open
    assert not parent._transport.is_closed
    with pytest.raises(ConfigurationError, match="cannot change"):
        parent.with_options(base_url="http://elsewhere")
    parent.close()
    assert parent._transport.is_closed


def test_inference_client_is_bound_to_the_same_server_and_key_and_never_an_implicit_token() -> None:
    with ZephyrClient("http://127.0.0.1:1", api_key="sk-abcdef") as keyed:
        bound = keyed.inference_client
        assert bound.model == "http://127.0.0.1:1"
        assert bound.token == "sk-abcdef"
    with ZephyrClient("http://127.0.0.1:1") as keyless:
        assert keyless.inference_client.headers.get("authorization", "absent") is None
