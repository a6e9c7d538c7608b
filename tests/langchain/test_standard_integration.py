"""LangChain's own standard integration tests for `ZephyrChatModel`, over real HTTP against the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from zephyr_tgi.integrations.langchain import ZephyrChatModel
from zephyr_tgi.testing import TGIEmulator


class TestZephyrChatModelIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, langchain_emulator: TGIEmulator) -> None:
        self.url = langchain_emulator.url

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ZephyrChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": self.url, "max_tokens": 64, "timeout": 30}

    @property
    def supports_model_override(self) -> bool:
        return False  # a TGI server serves one model

    @property
    def supports_json_mode(self) -> bool:
        return True

    # The emulator's stand-in model writes schema-valid placeholder arguments (1 for an integer, "example" for a
    # string): it cannot read "magic_function(3)" or copy a Chinese name from the prompt. These three checks
    # need a real model; strict xfail turns them red the day they pass. What they check apart from the value
    # (one typed call, its name, id and stream assembly) is tested in test_zephyr_chat_model.py.
    _NEEDS_A_REAL_MODEL = "the emulator's stand-in model fills tool arguments with placeholders, not 3 or 你好"

    @pytest.mark.xfail(strict=True, reason=_NEEDS_A_REAL_MODEL)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(strict=True, reason=_NEEDS_A_REAL_MODEL)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(strict=True, reason=_NEEDS_A_REAL_MODEL)
    def test_unicode_tool_call_integration(
        self,
        model: BaseChatModel,
        *,
        tool_choice: str | None = None,  # noqa: PT028 - the standard suite's signature
        force_tool_call: bool = True,  # noqa: PT028
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)
