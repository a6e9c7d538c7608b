"""A tool loop over TGI's /v1/chat/completions: the model asks for a tool, Python runs it, the model answers.

Zephyr's chat template knows only system, user and assistant turns, and TGI drops any other role when it
renders the prompt: a `tool` message would never reach the model. So the call goes back as the assistant's
turn and the result as a user turn, and the last request sets tool_choice="none" to get the answer in text.
"""

from __future__ import annotations

import json
from typing import Any

from _server import client_for, server_url

from zephyr_tgi import ZephyrClient

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    }
]


def get_weather(city: str, unit: str) -> dict[str, Any]:
    """A stand-in for a real weather service."""
    return {"city": city, "temperature": 18 if unit == "celsius" else 64, "unit": unit, "sky": "clear"}


FUNCTIONS = {"get_weather": get_weather}
MAX_ROUNDS = 2


def ask_with_tools(client: ZephyrClient, question: str) -> str:
    """Let the model call tools for at most MAX_ROUNDS rounds, then ask for the answer in text."""
    messages: list[dict[str, str]] = [{"role": "user", "content": question}]
    for _ in range(MAX_ROUNDS):
        completion = client.chat_completion(messages, tools=TOOLS, max_tokens=200)
        if not completion.tool_calls:
            return completion.text  # the model chose to answer (TGI's no_tool)
        for call in completion.tool_calls:
            result = FUNCTIONS[call.function.name](**call.function.parsed_arguments())
            print(f"tool call {call.id}: {call.function.name}({call.function.arguments}) -> {json.dumps(result)}")
            messages.append(
                {"role": "assistant", "content": f"Calling {call.function.name}({call.function.arguments})"}
            )
            messages.append({"role": "user", "content": f"Result of {call.function.name}: {json.dumps(result)}"})
    return client.chat_completion(messages, tools=TOOLS, tool_choice="none", max_tokens=200).text


def main() -> None:
    with server_url() as url, client_for(url) as client:
        answer = ask_with_tools(client, "What is the weather in Paris, in celsius?")
        print(f"answer -> {answer!r}")

        print("streamed tool call -> ", end="")
        stream = client.chat_completion("Weather in Rome?", tools=TOOLS, tool_choice="get_weather", stream=True)
        arguments = "".join(delta.arguments for chunk in stream for delta in chunk.tool_calls)
        print(json.loads(arguments))


if __name__ == "__main__":
    main()
