"""Conversation and AsyncConversation: chat history that stays inside the server's context window.

When the history outgrows the budget, whole turns are dropped, oldest first: never the system prompt, never
the newest user turn. The budget is the server's input window, less the room kept for the answer
(`max_new_tokens`, or `answer_reserve` when that is unset or larger than the window).

Zephyr's prompt is `<|role|>\\n{content}</s>\\n` per message, and TGI's tokenizer (like `ZephyrTokenizer`)
splits the text at `</s>` before tokenizing the stretches between. Cut just after each `</s>`, the prompt is a
sum of pieces whose token counts do not depend on their neighbours: each message is counted once, the new
ones of an ask in a single count, and fitting the window is arithmetic, however long the history grows.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar

from .._display import html_turns, preview
from .._errors import ConfigurationError, MalformedResponseError, TokenBudgetError
from .._types import GenerationResult, StreamChunk
from . import flows
from .budget import token_upper_bound
from .core import native_request
from .flows import Context, Flow
from .history import HistoryIndex
from .params import Limits, SamplingParams, merge_params
from .templates import (
    EOS_TOKEN,
    GENERATION_PROMPT,
    Message,
    SpecialTokenPolicy,
    check_special_tokens,
    make_message,
)

if TYPE_CHECKING:
    from .async_client import AsyncZephyrClient
    from .sync_client import ZephyrClient

__all__ = ["AsyncConversation", "Conversation", "OverflowPolicy", "shorter_histories"]

OverflowPolicy = Literal["drop_oldest", "raise"]
_Client = TypeVar("_Client", "ZephyrClient", "AsyncZephyrClient")
_T = TypeVar("_T")
_FORMAT_VERSION = 1
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EOS_ID = 2


def shorter_histories(turns: Sequence[Message]) -> Iterator[list[Message]]:
    """The history itself, then with whole turns dropped from the front, down to the newest user turn."""
    current = list(turns)
    yield current
    for start in _turn_starts(current)[1:]:
        yield current[start:]


def _turn_starts(turns: Sequence[Message]) -> list[int]:
    """Where the history may start: 0, then each user turn after the first message (dropping the ones before)."""
    return [0, *(index for index in range(1, len(turns)) if turns[index].role == "user")]


def _piece(message: Message, *, first: bool) -> str:
    """The part of the rendered prompt that is this message's, cut just after its `</s>`."""
    head = "" if first else "\n"
    return f"{head}<|{message.role}|>\n{message.content}{EOS_TOKEN}"


_TAIL = "\n" + GENERATION_PROMPT  # what follows the last message's `</s>`


def _split_counts(pieces: Sequence[str], ids: Sequence[int]) -> list[int]:
    """Tokens of each piece, from the ids of their concatenation: each piece ends with its `</s>` (id 2), the
    tail ends the text."""
    counts: list[int] = []
    position = 0
    for piece in pieces:
        eos_wanted = piece.count(EOS_TOKEN)
        start = position
        while eos_wanted and position < len(ids):
            if ids[position] == _EOS_ID:
                eos_wanted -= 1
            position += 1
        if eos_wanted:
            raise MalformedResponseError(
                "the server's /tokenize does not split the text at </s> as TGI does; counting cannot continue"
            )
        if not piece.endswith(EOS_TOKEN):  # the tail: whatever is left
            position = len(ids)
        counts.append(position - start)
    return counts


class _ConversationState(Generic[_Client]):
    """History, settings and the pure parts shared by both conversation classes."""

    def __init__(
        self,
        client: _Client,
        *,
        system: str | None = None,
        policy: OverflowPolicy = "drop_oldest",
        answer_reserve: int = 256,
        params: SamplingParams | None = None,
        messages: Sequence[Message] = (),
        session_id: str | None = None,
    ) -> None:
        """Start a conversation (or continue `messages`) with `client`; nothing is sent until the first ask.

        Args:
            client: The client that sends the requests.
            system: The system prompt of every request; default the client's `system_prompt`.
            policy: When the history does not fit the window: "drop_oldest" drops whole turns, oldest first (never
                the system prompt or the newest user turn); "raise" raises `TokenBudgetError`.
            answer_reserve: Tokens kept free for the answer when `max_new_tokens` is unset (or larger than the window).
            params: Sampling options of every ask, layered over the client's.
            messages: The history to start from.
            session_id: Sent as `X-Session-ID` on every request, for routers that hash on it; with several
                replicas it keeps the conversation on one. Default: a new random id (kept by `to_json()`).

        Raises:
            ConfigurationError: an unknown `policy`, `answer_reserve` below 1, `params` not `SamplingParams`, or a
                `session_id` that is not 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
        """
        if session_id is None:
            session_id = uuid.uuid4().hex
        elif not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            raise ConfigurationError(
                "session_id must be 1 to 128 letters, digits, '-', '_', '.' or ':' (it is sent as X-Session-ID)"
            )
        if policy not in ("drop_oldest", "raise"):
            raise ConfigurationError(f"policy must be 'drop_oldest' or 'raise', got {policy!r}")
        if not isinstance(answer_reserve, int) or answer_reserve < 1:
            raise ConfigurationError("answer_reserve must be at least 1 token")
        if params is not None and not isinstance(params, SamplingParams):
            raise ConfigurationError(f"params must be SamplingParams, got {type(params).__name__}")
        self.system = system
        self.policy: OverflowPolicy = policy
        self.answer_reserve = answer_reserve
        self.params = params
        self.messages: list[Message] = list(messages)
        self.dropped = 0  # messages left out of the last request to fit the window
        self._counts: dict[str, int] = {}  # token count of each prompt piece counted so far
        self._pieces: dict[tuple[int, SpecialTokenPolicy, bool], tuple[Message, str]] = {}  # each message's piece
        self._system_messages: dict[str, Message] = {}
        self._bounds: dict[str, int] = {_TAIL: token_upper_bound(_TAIL) - 2}  # each piece's share of the bound
        self._index: HistoryIndex = HistoryIndex()  # running sums over self.messages' pieces
        self._index_policy: SpecialTokenPolicy | None = None
        self.client: _Client = client
        self.session_id = session_id
        """Stable for this conversation (kept by `to_json()`): sent as `X-Session-ID` on its requests, for
        routers that hash on it, and with several replicas it keeps the conversation on one of them."""
        self._session_ctx: tuple[Context, Context] | None = None  # (the client's context, ours derived from it)

    def __repr__(self) -> str:
        last = f", last={self.messages[-1].role}: {preview(self.messages[-1].content)}" if self.messages else ""
        system = f", system={preview(self.system)}" if self.system is not None else ""
        return f"{type(self).__name__}({len(self.messages)} messages{system}{last}, dropped={self.dropped})"

    def _repr_html_(self) -> str:
        turns = [("system", self.system)] if self.system is not None else []
        turns += [(message.role, message.content) for message in self.messages]
        footer = f"{self.dropped} old message(s) left out of the last request to fit" if self.dropped else ""
        return html_turns(f"{type(self).__name__}: {len(self.messages)} messages", turns, footer)

    @classmethod
    def from_json(cls, data: str, client: _Client) -> Self:
        """A conversation saved by `to_json()`.

        Args:
            data: The JSON text `to_json()` returned.
            client: The client the restored conversation sends with.

        Returns:
            The conversation, with its history, system prompt and settings.

        Raises:
            ConfigurationError: `data` is not a conversation saved by `to_json()`.
        """
        return cls(client, **cls._parse(data))

    def reset(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.messages.clear()
        self.dropped = 0
        self._pieces.clear()

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
                "session_id": self.session_id,
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
                "session_id": loaded.get("session_id"),
            }
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise ConfigurationError(f"cannot load conversation: {exc}") from exc

    # -- one ask, as a flow both clients drive -----------------------------------------------------------

    def _ask_flow(
        self, ctx: Context, text: str, params: SamplingParams | None, overrides: dict[str, Any], *, stream: bool
    ) -> Flow[GenerationResult | None]:
        """One ask: the turn checked, the history fitted, the answer generated (or streamed: the turns join the
        history with the last chunk)."""
        ctx = self._context(ctx)
        config = ctx.config
        user = check_special_tokens([make_message("user", text)], config.special_tokens)[0]
        merged = merge_params(config.params, self.params, params, overrides)
        limits = yield from flows.limits_known(ctx)
        prompt, input_tokens = yield from self._fit(ctx, user, merged, limits)
        request = native_request(config, ctx.endpoint, prompt, merged, {})
        if not stream:
            result = yield from flows.generate(ctx, request, input_tokens=input_tokens)
            self._remember(user, result)
            return result

        def remember_last(chunk: StreamChunk) -> None:
            if chunk.result is not None:
                self._remember(user, chunk.result)

        yield from flows.tap(flows.generate_stream(ctx, request, input_tokens=input_tokens), remember_last)
        return None

    def _traced(
        self, flow: Flow[_T], text: str, params: SamplingParams | None, overrides: dict[str, Any], *, stream: bool
    ) -> Flow[_T]:
        """An ask's flow, recorded as a `chat` span when the client's telemetry is on (content: the history held,
        before old turns are dropped to fit, and the new turn)."""
        client = self.client
        instrumentation = client._instrumentation
        if instrumentation is None:
            return flow
        merged = merge_params(client._config.params, self.params, params, overrides)
        messages: list[Message] | None = None
        if instrumentation.capture_content:
            system = self.system if self.system is not None else client._config.system_prompt
            opening: list[Message] = [make_message("system", system)] if system else []
            messages = [*opening, *self.messages, make_message("user", text)]
        return client._traced_native(flow, "chat", merged, stream=stream, messages=messages)

    def _context(self, client_ctx: Context) -> Context:
        """The client's context for this conversation's session, made once per client context."""
        cached = self._session_ctx
        if cached is not None and cached[0] is client_ctx:
            return cached[1]
        ours = client_ctx.for_session(self.session_id)
        self._session_ctx = (client_ctx, ours)
        return ours

    def _remember(self, user: Message, result: GenerationResult) -> None:
        self.messages += [user, Message(role="assistant", content=result.text)]

    def _fit(self, ctx: Context, user: Message, params: SamplingParams, limits: Limits) -> Flow[tuple[str, int | None]]:
        """The prompt of the longest history that fits, and its exact token count when it had to be counted.

        Each message is checked, cut into its piece and added to the history's running sums once, when first
        seen; after that an ask costs a subtraction and a binary search, however long the history, and the
        prompt is its pieces joined (the rendered prompt is exactly that sum).
        """
        tokens_policy: SpecialTokenPolicy = ctx.config.special_tokens
        if tokens_policy != self._index_policy:  # the pieces depend on it
            self._index.clear()
            self._index_policy = tokens_policy
        index: HistoryIndex = self._index
        index.sync(self.messages, lambda m: self._piece_of(m, tokens_policy, first=False), self._bounds.__getitem__)
        limit = self._input_limit(limits, params)
        system = self.system if self.system is not None else ctx.config.system_prompt
        head = self._system_piece(system or "", tokens_policy)
        newest = self._piece_of(user, tokens_policy, first=False)
        bounds = self._bounds
        # token_upper_bound adds up over pieces: their UTF-8 bytes and `<`s, plus 2 for the whole prompt.
        if bounds[head] + index.bound + bounds[newest] + bounds[_TAIL] + 2 <= limit:  # surely fits: no count
            self.dropped = 0
            return head + index.joined(0) + newest + _TAIL, None
        yield from self._count_new(ctx, [head, *index.uncounted(), newest, _TAIL])
        counts = self._counts
        index.add_counts(counts.__getitem__)
        fixed = 1 + counts[head] + counts[newest] + counts[_TAIL]  # BOS, system, newest turn, generation prompt
        total = fixed + index.count
        if total <= limit:
            self.dropped = 0
            return head + index.joined(0) + newest + _TAIL, total
        if self.policy == "drop_oldest":
            found = index.first_start_leaving_out(total - limit)
            if found is not None:
                start, left_out = found
                self.dropped = start
                return head + index.joined(start) + newest + _TAIL, total - left_out
            if fixed <= limit and self.messages:  # the newest turn alone, after a history
                self.dropped = len(self.messages)
                return head + newest + _TAIL, fixed
        raise self._too_long(total, limit, limits)

    def _system_piece(self, text: str, policy: SpecialTokenPolicy) -> str:
        """The system message's piece, made once per system text (a new Message each ask would grow the cache)."""
        message = self._system_messages.get(text)
        if message is None:
            message = self._system_messages[text] = make_message("system", text)
        return self._piece_of(message, policy, first=True)

    def _piece_of(self, message: Message, policy: SpecialTokenPolicy, *, first: bool) -> str:
        """The message's piece of the prompt (checked under `policy`), cut and bounded once per message.

        Keyed by the message object (kept in the entry, so its id cannot be reused meanwhile): hashing a
        pydantic model per message per ask would cost more than everything else `_fit` does.
        """
        key = (id(message), policy, first)
        entry = self._pieces.get(key)
        if entry is not None and entry[0] is message:
            return entry[1]
        checked = check_special_tokens([message], policy)[0]  # raises under "raise", as chat() would
        piece = _piece(checked, first=first)
        self._pieces[key] = (message, piece)
        self._bounds[piece] = token_upper_bound(piece) - 2
        return piece

    def _count_new(self, ctx: Context, pieces: Sequence[str]) -> Flow[None]:
        new = [p for p in dict.fromkeys(pieces) if p not in self._counts]
        if not new:
            return
        tokenizer = ctx.config.tokenizer
        if tokenizer is not None:
            counts = [tokenizer.count(p, add_bos=False) for p in new]
        else:
            # The new pieces (each ends with its `</s>`, the tail last) in one /tokenize call, split at `</s>`.
            new.sort(key=lambda p: p == _TAIL)
            ids = yield from flows.token_ids(ctx, "".join(new))
            counts = _split_counts(new, ids)
        self._counts.update(zip(new, counts, strict=True))

    def _input_limit(self, limits: Limits, params: SamplingParams) -> int:
        asked = params.max_new_tokens
        # An answer as long as the window or longer cannot be reserved: the budget policy deals with it (it
        # lowers max_new_tokens with a note, or raises), as it does for generate().
        reserve = asked if asked is not None and asked < limits.max_total_tokens else self.answer_reserve
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


class Conversation(_ConversationState["ZephyrClient"]):
    """A chat history with a `ZephyrClient` that keeps every request inside the context window."""

    def ask(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
        """Send a user turn with as much history as fits; both turns join the history on success.

        Args:
            text: The user's turn.
            params: Sampling options of this ask, layered over the conversation's.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, ...), layered over `params`.

        Returns:
            The answer.

        Raises:
            TokenBudgetError: the newest turn alone does not fit, or any history does not with `policy="raise"`.
        """
        result = self.client._run(
            self._traced(
                self._ask_flow(self.client._ctx, text, params, overrides, stream=False),
                text,
                params,
                overrides,
                stream=False,
            )
        )
        assert result is not None
        return result

    def ask_stream(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> Iterator[StreamChunk]:
        """Like `ask`, streaming; the turns join the history when the stream completes.

        Args:
            text: The user's turn.
            params: Sampling options of this ask, layered over the conversation's.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, ...), layered over `params`.

        Returns:
            The answer's chunks; the last one carries the whole `GenerationResult`.
        """
        from .sync_client import Stream

        flow = self._ask_flow(self.client._ctx, text, params, overrides, stream=True)
        return Stream(self._traced(flow, text, params, overrides, stream=True), self.client)


class AsyncConversation(_ConversationState["AsyncZephyrClient"]):
    """A chat history with an `AsyncZephyrClient` that keeps every request inside the context window."""

    async def ask(self, text: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
        """Send a user turn with as much history as fits; both turns join the history on success.

        Args:
            text: The user's turn.
            params: Sampling options of this ask, layered over the conversation's.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, ...), layered over `params`.

        Returns:
            The answer.

        Raises:
            TokenBudgetError: the newest turn alone does not fit, or any history does not with `policy="raise"`.
        """
        result = await self.client._run(
            self._traced(
                self._ask_flow(self.client._ctx, text, params, overrides, stream=False),
                text,
                params,
                overrides,
                stream=False,
            )
        )
        assert result is not None
        return result

    def ask_stream(
        self, text: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> AsyncIterator[StreamChunk]:
        """Like `ask`, streaming; the turns join the history when the stream completes.

        Args:
            text: The user's turn.
            params: Sampling options of this ask, layered over the conversation's.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, ...), layered over `params`.

        Returns:
            The answer's chunks; the last one carries the whole `GenerationResult`.
        """
        from .async_client import AsyncStream

        flow = self._ask_flow(self.client._ctx, text, params, overrides, stream=True)
        return AsyncStream(self._traced(flow, text, params, overrides, stream=True), self.client)
