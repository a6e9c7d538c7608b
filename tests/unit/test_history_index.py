"""The history's running sums choose the same turns as trying every start in turn, at any length."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zephyr_tgi._client.history import HistoryIndex
from zephyr_tgi._client.templates import Message

_ROLES = st.sampled_from(["user", "assistant"])


def _messages(roles: list[str]) -> list[Message]:
    return [Message(role=role, content=f"message {i}") for i, role in enumerate(roles)]


def _by_trying_every_start(costs: list[int], roles: list[str], left_out: int) -> tuple[int, int] | None:
    """The reference: the first start (0, or a user turn after it) whose messages before it hold `left_out`."""
    for start in range(len(costs)):
        if (start == 0 or roles[start] == "user") and sum(costs[:start]) >= left_out:
            return start, sum(costs[:start])
    return None


@given(
    history=st.lists(st.tuples(_ROLES, st.integers(0, 50)), max_size=40),
    left_out=st.integers(0, 800),
    synced_at=st.integers(0, 40),
)
def test_the_first_start_is_the_one_trying_every_start_finds(
    history: list[tuple[str, int]], left_out: int, synced_at: int
) -> None:
    roles = [role for role, _ in history]
    costs = [cost for _, cost in history]
    messages = _messages(roles)
    cost_of = {m.content: cost for m, cost in zip(messages, costs, strict=True)}
    index = HistoryIndex()
    # Indexed in two steps (the history grows between asks), with counts added after each.
    first = min(synced_at, len(messages))
    counted = 0
    for upto in (first, len(messages)):
        index.sync(messages[:upto], lambda m: m.content, lambda piece: 2 * cost_of[piece])
        assert index.uncounted() == [m.content for m in messages[counted:upto]]
        index.add_counts(cost_of.__getitem__)
        counted = upto
    assert index.count == sum(costs)
    assert index.bound == 2 * sum(costs)
    assert index.first_start_leaving_out(left_out) == _by_trying_every_start(costs, roles, left_out)


def test_a_history_edited_before_its_end_is_indexed_again() -> None:
    messages = _messages(["user", "assistant", "user", "assistant"])
    index = HistoryIndex()
    index.sync(messages, lambda m: m.content, len)
    index.add_counts(len)
    before = index.count
    messages[1] = Message(role="assistant", content="a much longer answer than before")
    index.sync(messages, lambda m: m.content, len)
    assert index.uncounted() == [m.content for m in messages]  # started over
    index.add_counts(len)
    assert index.count == before - len("message 1") + len("a much longer answer than before")
    del messages[2:]
    index.sync(messages, lambda m: m.content, len)
    index.add_counts(len)
    assert index.count == len("message 0") + len("a much longer answer than before")
