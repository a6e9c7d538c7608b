"""Which GPTQ branches fit the GPU, and a comparison run that launches, measures and stops each in turn."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigurationError
from .._launcher.variants import VARIANTS, GPTQVariant, VariantInfo, get_variant
from ._runner import LoadResult

__all__ = [
    "FreeMemoryProbe",
    "ServerFactory",
    "VariantComparison",
    "VariantOutcome",
    "VariantPlan",
    "nvidia_smi_free_memory_gb",
    "parse_nvidia_smi_free_mib",
    "plan_variants",
    "resolve_variants",
]

FreeMemoryProbe = Callable[[], float | None]
"""Free GPU memory in GB (10^9 bytes) on the GPU the server will use, or None when it cannot be told."""

# CUDA context, prefill activations and CUDA graphs come on top of the table's weights + one KV sequence.
RUNTIME_HEADROOM_GB = 1.5


def nvidia_smi_free_memory_gb(gpu_index: int = 0, *, timeout: float = 10.0) -> float | None:
    """Free memory of one GPU from `nvidia-smi` (None when nvidia-smi is missing or fails).

    Args:
        gpu_index: The GPU, as nvidia-smi numbers them.
        timeout: Seconds nvidia-smi may take.
    """
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        completed = subprocess.run(
            [executable, "--query-gpu=memory.free", "--format=csv,noheader,nounits", f"--id={gpu_index}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi_free_mib(completed.stdout) if completed.returncode == 0 else None


def parse_nvidia_smi_free_mib(output: str) -> float | None:
    """GB from nvidia-smi's `memory.free` in MiB (`--format=csv,noheader,nounits`), first line."""
    first = output.strip().splitlines()[0].strip() if output.strip() else ""
    try:
        return float(first) * 2**20 / 1e9
    except ValueError:
        return None


def resolve_variants(spec: str | Sequence[str]) -> list[VariantInfo]:
    """`"all"`, a comma-separated list, or a list of branch names, in the order given (duplicates dropped).

    Args:
        spec: "all", branch names separated by commas, or a list of branch names.

    Raises:
        ConfigurationError: nothing given, or an unknown branch name.
    """
    names = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else [str(name) for name in spec]
    names = [name for name in names if name]
    if not names:
        raise ConfigurationError("no GPTQ variant given: pass 'all' or branch names such as 'main'")
    if names == ["all"]:
        return [VARIANTS[variant] for variant in GPTQVariant]
    chosen: list[VariantInfo] = []
    for name in names:
        info = get_variant(name)
        if info not in chosen:
            chosen.append(info)
    return chosen


class VariantPlan(BaseModel):
    """Whether one branch is launched, and why not when it is skipped.

    Attributes:
        variant: The branch name.
        needs_gb: The GPU memory it needs, in GB.
        fits: Whether it is launched.
        reason: Why (or why not).
    """

    model_config = ConfigDict(frozen=True)

    variant: str
    needs_gb: float
    fits: bool
    reason: str


def plan_variants(
    variants: Sequence[VariantInfo], free_gb: float | None, *, headroom_gb: float = RUNTIME_HEADROOM_GB
) -> list[VariantPlan]:
    """Decide which branches fit `free_gb` of free GPU memory (all of them when the memory is unknown).

    Args:
        variants: The branches.
        free_gb: The GPU's free memory in GB, or None when unknown.
        headroom_gb: Memory each branch needs beyond its weights and KV cache (CUDA context, activations).
    """
    plans: list[VariantPlan] = []
    for info in variants:
        needs = round(info.estimated_vram_gb + headroom_gb, 2)
        if free_gb is None:
            plans.append(VariantPlan(variant=info.branch, needs_gb=needs, fits=True, reason="free GPU memory unknown"))
        elif needs <= free_gb:
            plans.append(
                VariantPlan(variant=info.branch, needs_gb=needs, fits=True, reason=f"needs {needs} of {free_gb:.2f} GB")
            )
        else:
            plans.append(
                VariantPlan(
                    variant=info.branch,
                    needs_gb=needs,
                    fits=False,
                    reason=f"skipped: needs about {needs} GB, the GPU has {free_gb:.2f} GB free",
                )
            )
    return plans


class VariantOutcome(BaseModel):
    """One branch of a comparison: its plan, and its measurements when it ran.

    Attributes:
        plan: Whether it was launched, and why.
        result: Its measurements, when it ran.
        error: Why it failed to start or run, when it did.
    """

    model_config = ConfigDict(frozen=True)

    plan: VariantPlan
    result: LoadResult | None = None
    error: str | None = None


class VariantComparison(BaseModel):
    """A comparison of branches (the file a resumed run continues).

    Attributes:
        engine: The engine the branches ran on.
        free_gb: The GPU's free memory in GB, None when unknown.
        outcomes: Each branch's outcome, in the order asked.
    """

    model_config = ConfigDict(frozen=True)

    engine: str = "tgi"
    free_gb: float | None
    outcomes: list[VariantOutcome]

    def outcome(self, variant: str) -> VariantOutcome | None:
        """The outcome of one branch, if the comparison holds it.

        Args:
            variant: The branch name.
        """
        return next((o for o in self.outcomes if o.plan.variant == variant), None)

    def completed(self, variant: str) -> bool:
        """Measured to the end (an interrupted or failed branch runs again on resume).

        Args:
            variant: The branch name.
        """
        found = self.outcome(variant)
        return found is not None and found.result is not None and not found.result.interrupted

    def with_outcome(self, outcome: VariantOutcome) -> VariantComparison:
        """A copy with `outcome` added, or replacing the one of the same branch (in the comparison's order).

        Args:
            outcome: The branch's new outcome.
        """
        others = [o for o in self.outcomes if o.plan.variant != outcome.plan.variant]
        order = {o.plan.variant: i for i, o in enumerate(self.outcomes)}
        merged = sorted([*others, outcome], key=lambda o: order.get(o.plan.variant, len(order)))
        return self.model_copy(update={"outcomes": merged})


ServerFactory = Callable[[VariantInfo], AbstractContextManager[str]]
"""Starts a server for a branch on entering (blocking until ready) and yields its URL; stops it on exit."""
