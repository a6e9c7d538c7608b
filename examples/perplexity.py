"""Perplexity of a text from the engine's prompt logprobs (TGI needs --enable-prefill-logprobs; vLLM and SGLang
return them on request)."""

from __future__ import annotations

from _server import client_for, server_url

from zephyr_tgi import PrefillUnavailableError

TEXT = (
    "Zephyr is a series of language models that are trained to act as helpful assistants. "
    "Zephyr-7B-alpha is the first model in the series, a fine-tuned version of Mistral-7B-v0.1."
)


def main() -> None:
    with server_url(enable_prefill_logprobs=True) as url, client_for(url) as client:
        try:
            print(f"perplexity: {client.perplexity(TEXT):.3f} over {client.count_tokens(TEXT) - 1} tokens")
        except PrefillUnavailableError as error:
            print(f"not available on this server: {error}")


if __name__ == "__main__":
    main()
