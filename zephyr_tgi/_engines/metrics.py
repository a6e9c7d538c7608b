"""One typed summary over each engine's Prometheus names (`tgi_*`, `vllm:*`, `sglang:*`)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

__all__ = ["MetricsSummary", "summarize"]


class MetricsSummary(BaseModel):
    """What every engine's `/metrics` says, under one set of names (None: the engine does not report it).

    Attributes:
        engine: The engine whose metrics these are.
        requests_running: Requests being generated now.
        requests_waiting: Requests queued.
        requests_succeeded: Requests finished since the server started.
        prompt_tokens: Prompt tokens processed since the server started.
        generated_tokens: Tokens generated since the server started.
    """

    model_config = ConfigDict(frozen=True)

    engine: str
    requests_running: float | None = None
    requests_waiting: float | None = None
    requests_succeeded: float | None = None
    prompt_tokens: float | None = None
    generated_tokens: float | None = None


def summarize(engine: str, names: Mapping[str, str], metrics: Mapping[str, float]) -> MetricsSummary:
    """Sum each summary field's metric over its label sets (one per model, per finish reason, ...)."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.split("{", 1)[0]
        for field, wanted in names.items():
            if name == wanted:
                found[field] = found.get(field, 0.0) + value
    return MetricsSummary(engine=engine, **found)
