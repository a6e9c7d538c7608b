"""huggingface_hub's inference clients, minus one behaviour: re-sending a request on its own.

When a server answers 400 naming "model_kwargs" it does not use, `text_generation` records those parameters as
unsupported for that URL for the rest of the process and silently sends the request again without them
(`stop`, `details`, `max_new_tokens`...). For a TGI client that is wrong twice: the answer no longer honours
the caller's options, and every later call to that server drops them too. These subclasses turn the re-send
into the 400 error it started from.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

from huggingface_hub import AsyncInferenceClient, InferenceClient

from .._errors import translate

__all__ = ["GuardedAsyncInferenceClient", "GuardedInferenceClient"]

# Set while our call to text_generation runs: a nested call can only be huggingface_hub's re-send.
_IN_TEXT_GENERATION: ContextVar[bool] = ContextVar("zephyr_tgi_in_text_generation", default=False)


def _refuse_resend(model: str | None) -> None:
    """Raise the 400 that huggingface_hub is handling, and undo what it recorded about the URL."""
    from huggingface_hub.inference import _common

    _common._UNSUPPORTED_TEXT_GENERATION_KWARGS.pop(model, None)
    handled = sys.exc_info()[1]
    if handled is None:  # not inside huggingface_hub's handler: nothing to re-raise
        raise RuntimeError("text_generation called itself outside an error handler")
    raise translate(handled) from handled


class GuardedInferenceClient(InferenceClient):
    """InferenceClient whose `text_generation` never re-sends a request by itself."""

    def text_generation(self, *args: Any, **kwargs: Any) -> Any:
        if _IN_TEXT_GENERATION.get():
            _refuse_resend(kwargs.get("model") or self.model)
        token = _IN_TEXT_GENERATION.set(True)
        try:
            return super().text_generation(*args, **kwargs)
        finally:
            _IN_TEXT_GENERATION.reset(token)


class GuardedAsyncInferenceClient(AsyncInferenceClient):
    """AsyncInferenceClient whose `text_generation` never re-sends a request by itself."""

    async def text_generation(self, *args: Any, **kwargs: Any) -> Any:
        if _IN_TEXT_GENERATION.get():
            _refuse_resend(kwargs.get("model") or self.model)
        token = _IN_TEXT_GENERATION.set(True)
        try:
            return await super().text_generation(*args, **kwargs)
        finally:
            _IN_TEXT_GENERATION.reset(token)
