"""Capacity planning for Zephyr-7B-alpha GPTQ servers: a load generator, metrics, branch comparison, reports.

```python
import asyncio
from zephyr_tgi import AsyncZephyrClient
from zephyr_tgi.bench import Bounds, Sweep, run_load, synthetic_prompts

async def main() -> None:
    async with AsyncZephyrClient("http://127.0.0.1:8080") as client:
        prompts = await synthetic_prompts(client, input_tokens=256, output_tokens=128)
        result = await run_load(client, prompts, Sweep(max_users=64), bounds=Bounds(max_requests=100))
        print(result.users_meeting_slo, "users meet the SLO")

asyncio.run(main())
```

Plots need matplotlib (`pip install 'zephyr-tgi[bench]'`); everything else needs only the client.
"""

from __future__ import annotations

from ._compare import PromptSource, compare_variants, tgi_server_factory
from ._metrics import SLO, Distribution, RequestRecord, StepResult, summarize
from ._profiles import Bounds, Concurrent, Constant, Poisson, Profile, Sweep
from ._prompts import BenchPrompt, load_jsonl_prompts, synthetic_prompts
from ._report import advice, comparison_markdown, load_markdown, write_reports
from ._runner import USERS_PER_CLIENT, Clients, LoadResult, Progress, ProgressCallback, open_clients, run_load, run_step
from ._variants import (
    FreeMemoryProbe,
    ServerFactory,
    VariantComparison,
    VariantOutcome,
    VariantPlan,
    nvidia_smi_free_memory_gb,
    plan_variants,
    resolve_variants,
)

__all__ = [
    "SLO",
    "USERS_PER_CLIENT",
    "BenchPrompt",
    "Bounds",
    "Clients",
    "Concurrent",
    "Constant",
    "Distribution",
    "FreeMemoryProbe",
    "LoadResult",
    "Poisson",
    "Profile",
    "Progress",
    "ProgressCallback",
    "PromptSource",
    "RequestRecord",
    "ServerFactory",
    "StepResult",
    "Sweep",
    "VariantComparison",
    "VariantOutcome",
    "VariantPlan",
    "advice",
    "compare_variants",
    "comparison_markdown",
    "load_jsonl_prompts",
    "load_markdown",
    "nvidia_smi_free_memory_gb",
    "open_clients",
    "plan_variants",
    "resolve_variants",
    "run_load",
    "run_step",
    "summarize",
    "synthetic_prompts",
    "tgi_server_factory",
    "write_reports",
]
