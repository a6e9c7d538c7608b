"""The emulator's performance model: how long prefill and decode steps take, and when requests queue.

The numbers are illustrative, not measurements of any GPU: they give the emulator the *shape* of a served
7B 4-bit model (TTFT that grows with the prompt, inter-token latency that grows with the batch, a queue once
the batch's token budget is used up) so that load tests and `zephyr-tgi bench` have something realistic to
measure on a machine without a GPU.

The scheduler follows TGI's continuous batching in its simplest form:

- a request reserves `input_tokens + max_new_tokens` of the batch budget (TGI's `max_batch_total_tokens`)
  and waits in a FIFO queue while the running batch has no room for it;
- admitted requests are prefilled together in one step, which produces their first token; the running batch
  makes no progress meanwhile (TGI pauses decode to prefill, then concatenates the batches);
- otherwise each decode step gives every running sequence one token and lasts
  `decode_step_base + decode_step_per_sequence * batch_size`.

TGI's `waiting_served_ratio` / `max_waiting_tokens` refinements and chunked prefill are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["BatchScheduler", "PerformanceModel", "SequenceTicket"]


@dataclass(frozen=True, slots=True)
class PerformanceModel:
    """Latencies and the batch budget of an emulated GPU (all times in seconds).

    The defaults are shaped like Zephyr-7B GPTQ 4-bit on one mid-range 24 GB GPU: a prefill step of 10 ms
    plus 0.08 ms per prompt token (about 12,500 prompt tokens/s), 18 ms per decode step for one sequence
    growing by 0.25 ms per extra sequence in the batch (about 55 tokens/s for one user, 1,900 tokens/s at 64),
    and a KV budget of 32,768 tokens. They are illustrative, not measured; set them to what your GPU shows.

    Attributes:
        prefill_base: Seconds of one prefill step, whatever its length.
        prefill_per_token: Seconds a prefill step grows by per prompt token.
        decode_step_base: Seconds of one decode step for a single sequence.
        decode_step_per_sequence: Seconds a decode step grows by per extra sequence in the batch.
        max_batch_total_tokens: The batch's token budget (TGI's `--max-batch-total-tokens`): prompt +
            `max_new_tokens` of every running request.
    """

    prefill_base: float = 0.010
    prefill_per_token: float = 0.00008
    decode_step_base: float = 0.018
    decode_step_per_sequence: float = 0.00025
    max_batch_total_tokens: int = 32_768

    def __post_init__(self) -> None:
        for name in ("prefill_base", "prefill_per_token", "decode_step_base", "decode_step_per_sequence"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"PerformanceModel.{name} must be >= 0 seconds, got {value!r}")
        if self.max_batch_total_tokens < 1:
            raise ValueError(f"PerformanceModel.max_batch_total_tokens must be >= 1, got {self.max_batch_total_tokens}")

    def prefill_seconds(self, input_tokens: int) -> float:
        """One prefill step over `input_tokens` prompt tokens (of every request admitted together).

        Args:
            input_tokens: The prompt tokens prefilled in the step.
        """
        return self.prefill_base + self.prefill_per_token * input_tokens

    def decode_step_seconds(self, batch_size: int) -> float:
        """One decode step of a batch of `batch_size` sequences.

        Args:
            batch_size: The sequences in the batch.
        """
        return self.decode_step_base + self.decode_step_per_sequence * max(batch_size - 1, 0)

    def max_batch_size(self, tokens_per_request: int) -> int:
        """How many requests reserving `tokens_per_request` each fit in the budget at once.

        Args:
            tokens_per_request: Prompt + `max_new_tokens` of one request.
        """
        return max(self.max_batch_total_tokens // max(tokens_per_request, 1), 1)

    def decode_tokens_per_second(self, batch_size: int) -> float:
        """Output tokens/s of a steady batch of `batch_size` sequences (prefill excluded).

        Args:
            batch_size: The sequences in the batch.
        """
        return batch_size / self.decode_step_seconds(batch_size)


@dataclass(eq=False, slots=True)
class SequenceTicket:
    """One request's place in the scheduler: the tokens it has been given so far."""

    input_tokens: int
    output_tokens: int
    reserved: int
    produced: int = 0
    consumed: int = 0
    finished: bool = False
    _scheduler: BatchScheduler | None = field(default=None, repr=False)

    async def next_token(self) -> None:
        """Wait until the engine has produced this sequence's next token."""
        scheduler = self._scheduler
        assert scheduler is not None
        while self.produced <= self.consumed:
            await scheduler.wait_step()
        self.consumed += 1


class BatchScheduler:
    """Continuous batching over a `PerformanceModel`, driven by one task on the emulator's loop."""

    def __init__(self, model: PerformanceModel) -> None:
        self.model = model
        self._waiting: deque[SequenceTicket] = deque()
        self._running: list[SequenceTicket] = []
        self._reserved = 0
        self._step: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    @property
    def batch_size(self) -> int:
        """Sequences in the running batch now."""
        return len(self._running)

    @property
    def queued(self) -> int:
        """Requests waiting for room in the batch."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def sequence(
        self, input_tokens: int, output_tokens: int, max_new_tokens: int
    ) -> AsyncIterator[SequenceTicket]:
        """Queue a request generating `output_tokens` (of at most `max_new_tokens`, which it reserves).

        Inside the block, `await ticket.next_token()` before sending each token; leaving the block (the
        client went away, or the stream ended) frees the reservation.
        """
        # TGI reserves room for the longest generation the request allows, not the one it will produce.
        reserved = min(input_tokens + max(max_new_tokens, output_tokens), self.model.max_batch_total_tokens)
        ticket = SequenceTicket(input_tokens, max(output_tokens, 1), reserved, _scheduler=self)
        self._waiting.append(ticket)
        self._ensure_running()
        try:
            yield ticket
        finally:
            self._leave(ticket)

    async def wait_step(self) -> None:
        """Wait for the end of the current engine step."""
        if self._step is None:
            self._step = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._step)

    async def aclose(self) -> None:
        """Stop the engine task (the emulator calls this when it stops)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- internals ----------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._engine(), name="emulator-batch-engine")

    def _leave(self, ticket: SequenceTicket) -> None:
        if not ticket.finished:
            ticket.finished = True
            if ticket in self._running:
                self._running.remove(ticket)
                self._reserved -= ticket.reserved
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(ticket)

    def _admit(self) -> list[SequenceTicket]:
        """Move queued requests into the batch, in order, while their reservations fit."""
        admitted: list[SequenceTicket] = []
        while self._waiting:
            ticket = self._waiting[0]
            if self._running and self._reserved + ticket.reserved > self.model.max_batch_total_tokens:
                break
            self._waiting.popleft()
            self._running.append(ticket)
            self._reserved += ticket.reserved
            admitted.append(ticket)
        return admitted

    def _end_step(self, stepped: list[SequenceTicket]) -> None:
        for ticket in stepped:
            if ticket.finished:
                continue
            ticket.produced += 1
            if ticket.produced >= ticket.output_tokens:
                # The engine is done with it; the stream may still be sending what it was given.
                ticket.finished = True
                self._running.remove(ticket)
                self._reserved -= ticket.reserved
        step, self._step = self._step, None
        if step is not None and not step.done():
            step.set_result(None)

    async def _engine(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        deadline = loop.time()
        while True:
            admitted = self._admit()
            if admitted:
                duration = self.model.prefill_seconds(sum(t.input_tokens for t in admitted))
                stepped = admitted
            elif self._running:
                duration = self.model.decode_step_seconds(len(self._running))
                stepped = list(self._running)
            else:
                wake.clear()
                await wake.wait()
                deadline = loop.time()
                continue
            # Sleeping to an absolute deadline keeps scheduling overhead from adding up over many steps.
            deadline = max(deadline + duration, loop.time())
            await asyncio.sleep(deadline - loop.time())
            self._end_step(stepped)
