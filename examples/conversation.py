"""A multi-turn conversation that stays inside the context window, saved and restored as JSON.

The emulator here gets a tiny window (200 tokens) so you can watch old turns being dropped.
"""

from __future__ import annotations

from _server import client_for, server_url

from zephyr_tgi import Conversation

QUESTIONS = [
    "What is Zephyr-7B-alpha?",
    "Which GPTQ branch should I pick for a 12 GB GPU?",
    "And what does act order change?",
    "Summarise our conversation in one sentence.",
]


def main() -> None:
    with server_url(max_input_tokens=150, max_total_tokens=200) as url, client_for(url) as client:
        conversation = Conversation(client, system="You are a concise assistant.", answer_reserve=40)
        for question in QUESTIONS:
            print(f"\nuser> {question}\nassistant> ", end="", flush=True)
            for chunk in conversation.ask_stream(question, max_new_tokens=40):
                print(chunk.text, end="", flush=True)
            tokens = client.count_tokens(conversation.messages, system=conversation.system)
            print(
                f"\n  [history: {len(conversation.messages)} messages, {tokens} tokens; "
                f"dropped for the last request: {conversation.dropped}]"
            )
        saved = conversation.to_json()
        restored = Conversation.from_json(saved, client)
        print(f"\nsaved {len(saved)} bytes of JSON; restored {len(restored.messages)} messages")


if __name__ == "__main__":
    main()
