"""Token budget: make sure prompt + max_new_tokens fits the server's window before anything is sent.

TGI >= 3.1.1 checks `input_tokens + min(max_new_tokens, 1024) <= max_total_tokens` first and
`input_tokens <= max_input_tokens` second (with `truncate`, the input counts as at most `truncate` tokens),
then generates in chunks of at most 1024 tokens and stops when the window is full. So TGI accepts a
`max_new_tokens` larger than what is left and quietly delivers fewer tokens. Policy "clamp" (default) lowers
`max_new_tokens` to what the window leaves and says so; "raise" refuses with `TokenBudgetError`; "off" sends
what was asked and lets TGI decide.
"""

from __future__ import annotations

from typing import Literal

from .._errors import TokenBudgetError
from .params import Limits, SamplingParams

__all__ = ["BudgetPolicy", "fit_budget", "needs_count", "token_upper_bound"]

BudgetPolicy = Literal["clamp", "raise", "off"]


def token_upper_bound(prompt: str) -> int:
    """An upper bound on TGI's token count for `prompt`, without tokenizing.

    Every SentencePiece token covers at least one UTF-8 byte (byte fallback included), except BOS and the
    single `▁` that may open each stretch of text between special tokens, and each special token starts
    with `<`; so bytes + stretches + BOS bounds the count.
    """
    return len(prompt.encode("utf-8")) + prompt.count("<") + 2


def needs_count(prompt: str, params: SamplingParams, limits: Limits) -> bool:
    """False when the prompt certainly fits, so the exact count (a tokenizer pass or a request) can be skipped."""
    # Four UTF-8 bytes per character at most: when even that bound fits, skip encoding the prompt.
    bound = 4 * len(prompt) + prompt.count("<") + 2
    if bound > limits.max_input_tokens or (
        params.max_new_tokens is not None and bound + params.max_new_tokens > limits.max_total_tokens
    ):
        bound = token_upper_bound(prompt)
    if params.truncate is not None:
        bound = min(bound, params.truncate)
    if bound > limits.max_input_tokens:
        return True
    return params.max_new_tokens is not None and bound + params.max_new_tokens > limits.max_total_tokens


def fit_budget(
    input_tokens: int, params: SamplingParams, limits: Limits, policy: BudgetPolicy
) -> tuple[SamplingParams, str | None]:
    """The params to send (max_new_tokens clamped if needed) and a warning to log, or raise.

    Raises:
        TokenBudgetError: the prompt alone is too long, or it does not fit and the policy is "raise".
    """
    if policy == "off":
        return params, None
    counted = min(input_tokens, params.truncate) if params.truncate is not None else input_tokens
    max_new = params.max_new_tokens

    def error(message: str) -> TokenBudgetError:
        return TokenBudgetError(
            message,
            input_tokens=counted,
            max_new_tokens=max_new or 0,
            max_input_tokens=limits.max_input_tokens,
            max_total_tokens=limits.max_total_tokens,
        )

    available = limits.max_total_tokens - counted
    if counted > limits.max_input_tokens or available < 1:
        raise error(
            f"the prompt is {counted} tokens; the server accepts at most {limits.max_input_tokens} "
            f"(and {limits.max_total_tokens} with the answer). Shorten it, drop old turns (Conversation does), "
            "or set truncate= to keep only the last tokens"
        )
    if max_new is None or max_new <= available:
        return params, None
    if policy == "raise":
        raise error(
            f"max_new_tokens={max_new} does not fit: the prompt is {counted} tokens of the server's "
            f"{limits.max_total_tokens}-token window, which leaves {available}. Lower max_new_tokens, use "
            f'budget="clamp", or budget="off" to let TGI decide (it stops the answer at the window)'
        )
    warning = (
        f"max_new_tokens lowered from {max_new} to {available}: the prompt is {counted} tokens and the server's "
        f"window is {limits.max_total_tokens}"
    )
    return params.model_copy(update={"max_new_tokens": available}), warning
