"""A conversation's history as running sums, so that fitting it to the window costs the same at any length.

A `Conversation` asks with the longest tail of its history that fits: the answer is the first turn start from
which the messages' token counts add up to no more than the limit. Kept as prefix sums over the messages (of
their upper bounds, and of their exact counts once known), that is a subtraction and a binary search; each
message is cut into its prompt piece and summed once, when it first joins the history.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Sequence

from .templates import Message

__all__ = ["HistoryIndex"]


class HistoryIndex:
    """Prefix sums over the messages of a history, extended as messages are appended.

    `sync()` checks (by identity, in one C-level pass) that the history still starts with the messages indexed;
    if anything before its end was replaced or removed, the index starts over, so editing `messages` by hand
    stays correct.
    """

    __slots__ = ("_bound_prefix", "_count_prefix", "_messages", "_pieces", "_start_prefix", "_starts")

    _messages: list[Message]
    _pieces: list[str]
    _bound_prefix: list[int]
    _count_prefix: list[int]
    _starts: list[int]
    _start_prefix: list[int]

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every message."""
        self._messages = []
        self._pieces = []
        self._bound_prefix = [0]  # upper bounds of messages [0, i)
        self._count_prefix = [0]  # exact counts of messages [0, i), as far as they are known
        self._starts = []  # where a sent history may start: 0, then each user turn after it
        self._start_prefix = []  # _count_prefix at each start, as far as known

    def __len__(self) -> int:
        return len(self._messages)

    def sync(
        self, messages: Sequence[Message], piece_of: Callable[[Message], str], bound_of: Callable[[str], int]
    ) -> None:
        """Index `messages`: the new ones at the end, or all of them again if the front changed."""
        known = len(self._messages)
        if len(messages) < known or not all(map(operator.is_, messages[:known], self._messages)):
            self.clear()
            known = 0
        for index in range(known, len(messages)):
            message = messages[index]
            piece = piece_of(message)
            self._messages.append(message)
            self._pieces.append(piece)
            self._bound_prefix.append(self._bound_prefix[-1] + bound_of(piece))
            if index == 0 or message.role == "user":
                self._starts.append(index)

    @property
    def bound(self) -> int:
        """The upper bound of all the messages' tokens."""
        return self._bound_prefix[-1]

    def joined(self, start: int) -> str:
        """The prompt text of the messages from `start` on: their pieces, joined."""
        return "".join(self._pieces[start:])

    def uncounted(self) -> list[str]:
        """The pieces whose counts are not in the running sum yet (oldest first)."""
        return self._pieces[len(self._count_prefix) - 1 :]

    def add_counts(self, count_of: Callable[[str], int]) -> None:
        """Extend the running sum of exact counts over every message (`count_of` knows each piece)."""
        prefix = self._count_prefix
        for piece in self._pieces[len(prefix) - 1 :]:
            prefix.append(prefix[-1] + count_of(piece))
        starts, start_prefix = self._starts, self._start_prefix
        for start in starts[len(start_prefix) :]:
            start_prefix.append(prefix[start])

    @property
    def count(self) -> int:
        """The exact tokens of all the messages (after `add_counts`)."""
        return self._count_prefix[-1]

    def first_start_leaving_out(self, tokens: int) -> tuple[int, int] | None:
        """The first turn start before which the messages hold at least `tokens` tokens, and how many they hold;
        None if even leaving out every indexed message is not enough (after `add_counts`)."""
        at = bisect.bisect_left(self._start_prefix, tokens)
        return (self._starts[at], self._start_prefix[at]) if at < len(self._starts) else None
