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
        "'huggingface_hub.inference._client') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_sync_and_async_conversations_have_the_same_methods() -> None:
    from zephyr_tgi import AsyncConversation, Conversation

    sync, asynchronous = _public_methods(Conversation), _public_methods(AsyncConversation)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name
