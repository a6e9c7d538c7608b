"""Structured output: JSON constrained by TGI's grammar and validated with pydantic, and a regex answer."""

from __future__ import annotations

from _server import client_for, server_url
from pydantic import BaseModel, Field

from zephyr_tgi import StructuredOutputError


class GPTQBranch(BaseModel):
    name: str = Field(description="branch name on the Hub")
    bits: int = Field(description="4 or 8")
    group_size: int
    act_order: bool


def main() -> None:
    with server_url() as url, client_for(url) as client:
        branch = client.chat_json("Describe the smallest GPTQ branch of zephyr-7B-alpha as JSON.", GPTQBranch)
        print(f"chat_json -> {branch!r}")

        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        print(f"chat_json (dict schema) -> {client.chat_json('Answer as JSON: what is GPTQ?', schema)}")

        size = client.chat_regex("How much VRAM does the main branch need?", r"[0-9]{1,2}(\.[0-9])? GB")
        print(f"chat_regex -> {size!r}")

        try:
            client.chat_json("Describe a branch.", GPTQBranch, max_new_tokens=3)
        except StructuredOutputError as error:
            print(f"a cut-off answer is refused, raw text kept: {error.raw_text!r}")


if __name__ == "__main__":
    main()
