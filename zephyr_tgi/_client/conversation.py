"""Conversation and AsyncConversation: chat history that stays inside the server's context window.

When the history outgrows the budget, whole turns are dropped, oldest first: never the system prompt, never
the newest user turn. The budget is the server's input window, less the room kept for the answer
(`max_new_tokens`, or `answer_reserve` when that is unset).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._errors import ConfigurationError, TokenBudgetError
from .._types import GenerationResult, StreamChunk
from .budget import token_upper_bound
from .params import Limits, SamplingParams, merge_params
from .templates import Message, check_special_tokens, make_message

if TYPE_CHECKING:
    from .shells import AsyncZephyrClient, ZephyrClient

__all__ = ["AsyncConversation", "Conversation", "OverflowPolicy", "shorter_histories"]

OverflowPolicy = Literal["drop_oldest", "raise"]
_FORMAT_VERSION = 1


def shorter_histories(turns: Sequence[Message]) -> Iterator[list[Message]]:
    """The history itself, then with whole turns dropped from the front, down to the newest user turn."""
    current = list(turns)
    yield current
    while len(current) > 1:
        # Drop the oldest message and any replies that followed it, up to the next user turn.
        cut = 1
        while cut < len(current) and current[cut].role != "user":
            cut += 1
        if cut >= len(current):
            return
        current = current[cut:]
        yield current


class _ConversationState:
    """History, settings and the pure parts shared by both conversation classes."""

    def __init__(
        self,
        *,
        system: str | None,
        policy: OverflowPolicy,
        answer_reserve: int,
        params: SamplingParams | None,
        messages: Sequence[Message] = (),
    ) -> None:
        if policy not in ("drop_oldest", "raise"):
            raise ConfigurationError(f"policy must be 'drop_oldest' or 'raise', got {policy!r}")
        if answer_reserve < 1:
            raise ConfigurationError("answer_reserve must be at least 1 token")
        self.system = system
        self.policy: OverflowPolicy = policy
        self.answer_reserve = answer_reserve
        self.params = params
        self.messages: list[Message] = list(messages)
        self.dropped = 0  # messages left out of the last request to fit the window

    def reset(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.messages.clear()
        self.dropped = 0

    def to_json(self) -> str:
        """The conversation as JSON, for saving."""
        return json.dumps(
            {
                "version": _FORMAT_VERSION,
                "system": self.system,
                "policy": self.policy,
                "answer_reserve": self.answer_reserve,
                "params": self.params.model_dump(exclude_unset=True, mode="json") if self.params else None,
                "messages": [m.model_dump() for m in self.messages],
            },
            ensure_ascii=False,
        )

    @staticmethod
    def _parse(data: str) -> dict[str, Any]:
        try:
            loaded = json.loads(data)
            if not isinstance(loaded, dict) or loaded.get("version") != _FORMAT_VERSION:
                raise ValueError("not a saved conversation")
            return {
                "system": loaded.get("system"),
                "policy": loaded.get("policy", "drop_oldest"),
                "answer_reserve": loaded.get("answer_reserve", 256),
                "params": SamplingParams.model_validate(loaded["params"]) if loaded.get("params") else None,
                "messages": [Message.model_validate(m) for m in loaded.get("messages", [])],
            }
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"cannot load conversation: {exc}") from exc

    def _user_turn(self, text: str, special_tokens: Any) -> Message:
        # Checked now, so a refused turn never enters the history.
        return check_special_tokens([make_message("user", text)], special_tokens)[0]

    @staticmethod
    def _bound_or(prompt: str, limit: int) -> int | None:
        """A cheap upper bound on the prompt's tokens when it already proves the prompt fits, else None."""
        bound = token_upper_bound(prompt)
        return bound if bound <= limit else None

    def _input_limit(self, limits: Limits, params: SamplingParams) -> int:
        reserve = params.max_new_tokens or self.answer_reserve
        return min(limits.max_input_tokens, limits.max_total_tokens - reserve)

    def _too_long(self, tokens: int, limit: int, limits: Limits) -> TokenBudgetError:
        return TokenBudgetError(
            f"the conversation needs {tokens} prompt tokens but only {limit} fit (window "
            f"{limits.max_total_tokens}, answer reserve included)"
            + ("; policy='drop_oldest' would drop old turns" if self.policy == "raise" else "")
            + ("; even the newest turn alone is too long" if self.policy == "drop_oldest" else ""),
            input_tokens=tokens,
            max_new_tokens=limits.max_total_tokens - limit,
            max_input_tokens=limits.max_input_tokens,
            max_total_tokens=limits.max_total_tokens,
        )


class Conversation(_ConversationState):
    """A chat history with a `ZephyrClient` that keeps every request inside the context window."""

    def __init__(
        self,
        client: ZephyrClient,
        *,
        system: str | None = None,
        policy: OverflowPolicy = "drop_oldest",
        answer_reserve: int = 256,
        params: SamplingParams | None = None,
        messages: Sequence[Message] = (),
    ) -> None:
        super().__init__(system=system, policy=policy, answer_reserve=answer_reserve, params=params, messages=messages)
        self.client = client

    @classmethod
    def from_json(cls, data: str, client: ZephyrClient) -> Conversation:
        """A conversation saved by `to_json()`."""
        return cls(client, **cls._parse(data))

    def ask(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
        """Send a user turn with as much history as fits; both turns join the history on success."""
        user, merged, history = self._prepare(text, params, overrides)
        result = self.client.chat(history, system=self.system, params=merged)
        self.messages += [user, Message(role="assistant", content=result.text)]
        return result

    def ask_stream(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> Iterator[StreamChunk]:
        """Like `ask`, streaming; the turns join the history when the stream completes."""
        user, merged, history = self._prepare(text, params, overrides)
        for chunk in self.client.chat_stream(history, system=self.system, params=merged):
            if chunk.result is not None:
                self.messages += [user, Message(role="assistant", content=chunk.result.text)]
            yield chunk

    def _prepare(
        self, text: str, params: SamplingParams | None, overrides: dict[str, Any]
    ) -> tuple[Message, SamplingParams, list[Message]]:
        user = self._user_turn(text, self.client.special_tokens)
        merged = merge_params(self.client.params, self.params, params, overrides)
        if not self.client.limits_known:
            self.client.info()  # the window size; the client keeps it for its own checks too
        limits = self.client.limits
        limit = self._input_limit(limits, merged)
        first: int | None = None
        for index, history in enumerate(shorter_histories([*self.messages, user])):
            prompt = self.client.chat_prompt(history, system=self.system)
            tokens = self._bound_or(prompt, limit) or self.client.count_tokens(prompt)
            first = tokens if first is None else first
            if tokens <= limit:
                self.dropped = len(self.messages) + 1 - len(history)
                return user, merged, history
            if self.policy == "raise" and index == 0:
                break
        raise self._too_long(first or 0, limit, limits)


class AsyncConversation(_ConversationState):
    """A chat history with an `AsyncZephyrClient` that keeps every request inside the context window."""

    def __init__(
        self,
        client: AsyncZephyrClient,
        *,
        system: str | None = None,
        policy: OverflowPolicy = "drop_oldest",
        answer_reserve: int = 256,
        params: SamplingParams | None = None,
        messages: Sequence[Message] = (),
    ) -> None:
        super().__init__(system=system, policy=policy, answer_reserve=answer_reserve, params=params, messages=messages)
        self.client = client

    @classmethod
    def from_json(cls, data: str, client: AsyncZephyrClient) -> AsyncConversation:
        """A conversation saved by `to_json()`."""
        return cls(client, **cls._parse(data))

    async def ask(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
        """Send a user turn with as much history as fits; both turns join the history on success."""
        user, merged, history = await self._prepare(text, params, overrides)
        result = await self.client.chat(history, system=self.system, params=merged)
        self.messages += [user, Message(role="assistant", content=result.text)]
        return result

    async def ask_stream(
        self, text: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> AsyncIterator[StreamChunk]:
        """Like `ask`, streaming; the turns join the history when the stream completes."""
        user, merged, history = await self._prepare(text, params, overrides)
        async for chunk in self.client.chat_stream(history, system=self.system, params=merged):
            if chunk.result is not None:
                self.messages += [user, Message(role="assistant", content=chunk.result.text)]
            yield chunk

    async def _prepare(
        self, text: str, params: SamplingParams | None, overrides: dict[str, Any]
    ) -> tuple[Message, SamplingParams, list[Message]]:
        user = self._user_turn(text, self.client.special_tokens)
        merged = merge_params(self.client.params, self.params, params, overrides)
        if not self.client.limits_known:
            await self.client.info()  # the window size; the client keeps it for its own checks too
        limits = self.client.limits
        limit = self._input_limit(limits, merged)
        first: int | None = None
        for index, history in enumerate(shorter_histories([*self.messages, user])):
            prompt = self.client.chat_prompt(history, system=self.system)
            tokens = self._bound_or(prompt, limit) or await self.client.count_tokens(prompt)
            first = tokens if first is None else first
            if tokens <= limit:
                self.dropped = len(self.messages) + 1 - len(history)
                return user, merged, history
            if self.policy == "raise" and index == 0:
                break
        raise self._too_long(first or 0, limit, limits)
