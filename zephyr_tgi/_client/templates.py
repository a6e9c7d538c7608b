"""Zephyr's chat format, rendered byte-exactly as transformers renders zephyr-7b-alpha's chat template.

The template (alignment-handbook's DEFAULT_CHAT_TEMPLATE) writes every message as
`<|{role}|>\\n{content}</s>\\n` and, when a generation prompt is asked for, `<|assistant|>\\n` after the
last message. It writes no `<s>`: TGI's `/generate` always prepends BOS itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .._errors import ConfigurationError, PromptInjectionError

__all__ = [
    "EOS_TOKEN",
    "GENERATION_PROMPT",
    "SPECIAL_TOKENS",
    "Message",
    "MessagesInput",
    "Role",
    "SpecialTokenPolicy",
    "build_messages",
    "check_special_tokens",
    "check_unicode",
    "make_message",
    "render_checked",
    "render_prompt",
]

Role = Literal["system", "user", "assistant"]
SpecialTokenPolicy = Literal["raise", "strip", "allow"]

EOS_TOKEN = "</s>"
GENERATION_PROMPT = "<|assistant|>\n"
# Longest first so that stripping `<|assistant|>` is not mistaken for anything shorter.
SPECIAL_TOKENS: tuple[str, ...] = ("<|assistant|>", "<|system|>", "<|user|>", "<unk>", "</s>", "<s>")


def check_unicode(text: str, what: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (lone surrogates, e.g. from errors='surrogateescape')."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode: {exc.reason} at position {exc.start}") from None


class Message(BaseModel):
    """One turn of a conversation.

    Attributes:
        role: "system", "user" or "assistant".
        content: The turn's text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _sendable(cls, value: str) -> str:
        check_unicode(value, "the content")
        return value


MessagesInput = str | Message | Mapping[str, str] | Iterable[Message | Mapping[str, str]]


def _find_special_token(content: str) -> str | None:
    """The first special token or role tag in `content`, by position."""
    found: tuple[int, str] | None = None
    for token in SPECIAL_TOKENS:
        at = content.find(token)
        if at != -1 and (found is None or at < found[0]):
            found = (at, token)
    return found[1] if found else None


def _strip_special_tokens(content: str) -> str:
    # Removing one token can join its neighbours into another ("<</s>/s>" -> "</s>"), so repeat.
    previous = None
    while previous != content:
        previous = content
        for token in SPECIAL_TOKENS:
            content = content.replace(token, "")
    return content


def check_special_tokens(messages: Sequence[Message], policy: SpecialTokenPolicy) -> list[Message]:
    """Apply the special-token policy: raise on smuggled tokens, strip them, or let them through."""
    if policy == "allow":
        return list(messages)
    checked: list[Message] = []
    for index, message in enumerate(messages):
        token = _find_special_token(message.content)
        if token is None:
            checked.append(message)
        elif policy == "strip":
            checked.append(Message(role=message.role, content=_strip_special_tokens(message.content)))
        else:
            raise PromptInjectionError(
                f"message {index} ({message.role}) contains {token!r}, a special token or role tag of the "
                "Zephyr template; it would let the text forge turns. Remove it, or pass "
                "special_tokens='strip' to drop such tokens or special_tokens='allow' to send them as they are",
                token=token,
                message_index=index,
            )
    return checked


def _to_message(item: Message | Mapping[str, str], index: int) -> Message:
    if isinstance(item, Message):
        return item
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"message {index} must be a Message or a mapping, not {type(item).__name__}")
    try:
        return Message.model_validate(dict(item))
    except ValidationError as exc:
        raise ConfigurationError(
            f"message {index} is invalid: role must be 'system', 'user' or 'assistant' and content a string "
            f"({exc.error_count()} error(s): {exc.errors()[0]['msg']})"
        ) from exc


_ROLES = frozenset(("system", "user", "assistant"))


def make_message(role: str, content: str) -> Message:
    """A `Message`, with invalid input reported as `ConfigurationError`."""
    if role in _ROLES and type(content) is str:
        # The common case, checked by hand: skipping pydantic's validation here is a measurable share of a
        # short request's CPU time. The checks are the model's own (role, str content, valid Unicode).
        try:
            check_unicode(content, "the content")
        except ValueError as exc:
            raise ConfigurationError(f"message 0 is invalid: {exc}") from None
        return Message.model_construct(role=role, content=content)  # type: ignore[arg-type]
    return _to_message({"role": role, "content": content}, 0)


def build_messages(messages: MessagesInput, *, system: str | None = None) -> list[Message]:
    """Normalise a prompt string, a message or a list of them, putting `system` first when given.

    Raises:
        ConfigurationError: no messages, an invalid message, or `system` given while the messages already
            start with a system message (which of the two was meant is ambiguous).
    """
    if isinstance(messages, str):
        result = [make_message("user", messages)]
    elif isinstance(messages, (Message, Mapping)):
        result = [_to_message(messages, 0)]
    else:
        result = [_to_message(item, index) for index, item in enumerate(messages)]
    if not result:
        raise ConfigurationError("no messages to send: pass a prompt string or at least one message")
    if system is not None:
        if result[0].role == "system":
            raise ConfigurationError("the messages already start with a system message; drop system= or that message")
        result.insert(0, make_message("system", system))
    return result


def render_prompt(
    messages: MessagesInput,
    *,
    add_generation_prompt: bool = True,
    special_tokens: SpecialTokenPolicy = "raise",
) -> str:
    """Render messages exactly as zephyr-7b-alpha's chat template does under transformers.

    Args:
        messages: a user prompt string, a `Message`/mapping, or a sequence of them.
        add_generation_prompt: end with `<|assistant|>\\n` so the model answers next.
        special_tokens: what to do with `</s>`, `<s>`, `<unk>` or role tags inside message content:
            `"raise"` (default) raises `PromptInjectionError`, `"strip"` removes them, `"allow"` sends them.
    """
    return render_checked(
        check_special_tokens(build_messages(messages), special_tokens), add_generation_prompt=add_generation_prompt
    )


def render_checked(messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
    """Render already-built and already-checked messages (the part of `render_prompt` after its checks)."""
    rendered = "".join(f"<|{message.role}|>\n{message.content}{EOS_TOKEN}\n" for message in messages)
    return rendered + GENERATION_PROMPT if add_generation_prompt else rendered
