"""huggingface_hub's `InferenceClient`, bound to a zephyr_tgi client's server and credentials.

The clients send every request over their own transport (docs/client.md says why); this is the way to the
routes they do not wrap. huggingface_hub would send the saved Hugging Face login or `HF_TOKEN` to any URL when
no key is given: a `None` authorization header is its documented way to send none, and a placeholder key spares
it looking a token up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core import USER_AGENT, ClientConfig

if TYPE_CHECKING:
    from huggingface_hub import InferenceClient

__all__ = ["inference_client_for"]

_NO_TOKEN = "no-token-sent"  # never sent: the None authorization header below wins


def inference_client_for(config: ClientConfig) -> InferenceClient:
    """An `InferenceClient` for `config`'s server: its api key, or no authorization at all."""
    from huggingface_hub import InferenceClient

    if config.api_key is not None:
        return InferenceClient(
            model=config.base_url, api_key=config.api_key.get_secret_value(), headers={"user-agent": USER_AGENT}
        )
    headers: dict[str, str | None] = {"user-agent": USER_AGENT, "authorization": None}
    return InferenceClient(model=config.base_url, api_key=_NO_TOKEN, headers=headers)  # type: ignore[arg-type]
