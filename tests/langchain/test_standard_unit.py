"""LangChain's own standard unit tests for `ZephyrChatModel` (no network: construction, binding, parameters)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from zephyr_tgi.integrations.langchain import ZephyrChatModel


class TestZephyrChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ZephyrChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Nothing listens here: unit tests only build the model, which sends nothing.
        return {"base_url": "http://127.0.0.1:9"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"ZEPHYR_TGI_URL": "http://127.0.0.1:9", "ZEPHYR_TGI_API_KEY": "secret-key"},
            {},
            {"base_url": "http://127.0.0.1:9", "api_key": "secret-key"},
        )

    @property
    def supports_model_override(self) -> bool:
        return False  # a TGI server serves one model
