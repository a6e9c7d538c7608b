"""Readiness of a starting TGI container: log-stage parsing, failure hints, the HTTP probe, the wait loop.

Everything but `probe` is pure or takes its I/O as callables, so the decisions are unit-tested without
Docker or HTTP. TGI binds its port only once weights are loaded and warmup is done, so "connection refused"
is the normal state for minutes; the container's status, polled on every round, is what tells a crash apart.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "LOG_TAIL_LINES",
    "LineSplitter",
    "ProbeOutcome",
    "ProgressCallback",
    "ProgressEvent",
    "PullProgress",
    "Stage",
    "WaitOutcome",
    "backoff_delays",
    "failure_hints",
    "parse_stage",
    "print_progress",
    "probe",
    "redact",
    "strip_ansi",
    "tail",
    "wait_for_ready",
]

LOG_TAIL_LINES = 50


class Stage(StrEnum):
    """A step of a TGI start, in the order they happen."""

    PULL = "pull"  # docker pulls the image
    START = "start"  # the container was created and started
    DOWNLOAD = "download"  # TGI checks and downloads the weights
    DOWNLOADED = "downloaded"
    SHARD_START = "shard_start"  # a model shard process starts loading the weights on its GPU
    SHARD_READY = "shard_ready"
    WEBSERVER = "webserver"  # the router starts
    WARMUP = "warmup"  # the router warms the model up (the moment CUDA OOM shows up)
    READY = "ready"  # /health answered 200 and a one-token generate worked


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A progress report while a server starts; `current`/`total` are bytes during a pull.

    Args:
        stage: How far the start has come.
        message: What happens, in a line.
        current: Bytes pulled so far, during a pull.
        total: Bytes to pull, during a pull (when docker knows).
    """

    stage: Stage
    message: str
    current: int | None = None
    total: int | None = None


ProgressCallback = Callable[[ProgressEvent], None]

# Substrings of TGI's own log lines (launcher/src/main.rs and the v3 router), checked in this order.
_STAGE_PATTERNS: tuple[tuple[Stage, re.Pattern[str]], ...] = (
    (Stage.DOWNLOAD, re.compile(r"Starting check and download process for")),
    (Stage.DOWNLOADED, re.compile(r"Successfully downloaded weights for")),
    (Stage.SHARD_START, re.compile(r"Starting shard\b")),
    (Stage.SHARD_READY, re.compile(r"Shard ready in\b")),
    (Stage.WEBSERVER, re.compile(r"Starting Webserver")),
    (Stage.WARMUP, re.compile(r"Warming up model")),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# "2025-01-01T00:00:00.123456Z  INFO shard-manager: text_generation_launcher: " -> the message only.
_PREFIX = re.compile(
    r"^\s*(?:\d{4}-\d\d-\d\dT[\d:.]+Z?\s+)?(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+(?:[\w\-{}=, ]+:\s+)?"
    r"(?:[\w:]+:\s+)?(?:[\w/.]+\.rs:\d+:\s+)?"
)


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (TGI's tracing output has them even without a TTY)."""
    return _ANSI.sub("", text)


def parse_stage(line: str) -> ProgressEvent | None:
    """The start stage a TGI log line announces, or None for any other line."""
    clean = strip_ansi(line).strip()
    for stage, pattern in _STAGE_PATTERNS:
        if pattern.search(clean):
            return ProgressEvent(stage, _PREFIX.sub("", clean) or clean)
    return None


class LineSplitter:
    """Turns chunks of log text into complete lines, keeping a partial last line for the next chunk."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, chunk: str) -> list[str]:
        """Complete lines found so far (without their newline)."""
        text = self._partial + chunk
        *lines, self._partial = text.split("\n")
        return [line.rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        """The unterminated last line, if any."""
        rest, self._partial = self._partial, ""
        return [rest] if rest else []


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of `text`, colour codes removed."""
    return "\n".join(strip_ansi(text).rstrip("\n").split("\n")[-lines:])


@dataclass(frozen=True, slots=True)
class _Hint:
    """A likely cause recognised in a crashed container's logs, said for a Python caller and for the CLI."""

    pattern: re.Pattern[str]
    python: str
    cli: str


_NO_GPU = (
    "no usable GPU in the container: install the NVIDIA driver and the NVIDIA Container Toolkit on the "
    "Docker host (`nvidia-ctk runtime configure --runtime=docker`, restart dockerd), check "
    "`docker run --rm --gpus all ubuntu nvidia-smi`, and {gpus} (see docs/launcher.md)"
)
# Several can apply; they are reported in this order.
_HINTS: tuple[_Hint, ...] = (
    _Hint(
        re.compile(
            r"Found no NVIDIA driver|No CUDA GPUs are available|CUDA driver version is insufficient|"
            r"NVIDIA driver on your system is too old|libcuda\.so|Torch not compiled with CUDA|"
            r"could not select device driver",
            re.I,
        ),
        _NO_GPU.format(gpus="pass gpus='all'"),
        _NO_GPU.format(gpus="use --gpus all"),
    ),
    _Hint(
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|Not enough memory to handle|CUBLAS_STATUS_ALLOC_FAILED",
            re.I,
        ),
        "the GPU ran out of memory (usually at warmup): lower max_batch_prefill_tokens / max_total_tokens, "
        "pick a 4-bit variant (main needs ~4.7 GB + overhead), free the GPU from other processes, or pass "
        "extra_args=('--cuda-memory-fraction', '0.9')",
        "the GPU ran out of memory (usually at warmup): pick a 4-bit --variant (`zephyr-tgi variants`; main needs "
        "~4.7 GB + overhead), give it a GPU of its own with --gpus, or free the GPU from other processes "
        "(smaller token budgets: TGIServer(max_batch_prefill_tokens=..., max_total_tokens=...) in Python)",
    ),
    _Hint(
        re.compile(r"RevisionNotFound|Revision Not Found|Invalid rev id|unknown revision", re.I),
        "the revision (variant branch) does not exist in that repository: use one of the GPTQVariant names, "
        "or a model_id whose branches match",
        "the revision (variant branch) does not exist in that repository: pass a --variant that "
        "`zephyr-tgi variants` lists",
    ),
    _Hint(
        re.compile(
            r"GatedRepoError|Cannot access gated repo|401 Client Error|Unauthorized for url|"
            r"Invalid (user )?token|Access to model .* is restricted",
            re.I,
        ),
        "the Hub refused access (gated or private repo): accept the model's terms on huggingface.co and set "
        "HF_TOKEN (or hf_token=) to a token with read access",
        "the Hub refused access (gated or private repo): accept the model's terms on huggingface.co and export "
        "HF_TOKEN with a token that has read access before `zephyr-tgi serve`",
    ),
    _Hint(
        re.compile(r"RepositoryNotFound|Repository Not Found|404 Client Error", re.I),
        "the model repository or a file was not found (404): check model_id and variant; a private repo "
        "also answers 404 without a token (set HF_TOKEN)",
        "the model repository or a file was not found (404): check --variant; a private repo also answers 404 "
        "without a token (export HF_TOKEN)",
    ),
    _Hint(
        re.compile(r"no kernel image is available for execution on the device", re.I),
        "the GPU is too old for this image's kernels (e.g. Turing/T4 sm75 has no Marlin): use an Ampere or "
        "newer GPU, or an older TGI image built for your architecture",
        "the GPU is too old for this image's kernels (e.g. Turing/T4 sm75 has no Marlin): use an Ampere or "
        "newer GPU, or pass --image with a TGI image built for your architecture",
    ),
    _Hint(
        re.compile(r"sliding_window.*None|None.*sliding_window", re.I),
        "a Mistral config problem (TGI #1342, 8-bit GPTQ branches on old TGI): use the pinned TGI 3.x image",
        "a Mistral config problem (TGI #1342, 8-bit GPTQ branches on old TGI): leave --image out to use the "
        "pinned TGI 3.x image",
    ),
    _Hint(
        re.compile(
            r"couldn't connect to 'https://huggingface\.co'|LocalEntryNotFoundError|"
            r"Max retries exceeded with url|Temporary failure in name resolution",
            re.I,
        ),
        "the container cannot reach huggingface.co: check the network/proxy, or pre-fill the cache mounted at "
        "/data and pass env={'HF_HUB_OFFLINE': '1'}",
        "the container cannot reach huggingface.co: check the network/proxy, or pre-fill the cache ($HF_HOME, "
        "mounted at /data) and start offline from Python with TGIServer(env={'HF_HUB_OFFLINE': '1'})",
    ),
    _Hint(
        re.compile(r"unexpected argument|Invalid argument:|ArgumentValidation|invalid value .* for", re.I),
        "TGI rejected a launcher flag: check extra_args against this image's `--help`",
        "TGI rejected a launcher flag: this --image may be a TGI release that does not know the flags "
        "zephyr-tgi passes; leave --image out for the pinned release",
    ),
    _Hint(
        re.compile(r"Bus error|NCCL error|/dev/shm", re.I),
        "shared memory problem between shards: raise shm_size (e.g. '2g') or reduce num_shard",
        "shared memory problem between shards: serve on fewer GPUs (--gpus 1), or raise shm_size from Python "
        "(TGIServer(shm_size='2g'))",
    ),
)


def failure_hints(logs: str, *, for_cli: bool = False) -> list[str]:
    """What probably went wrong, judged from a crashed container's logs; empty when nothing matched.

    `for_cli` words the hints in `zephyr-tgi serve` flags instead of `TGIServer` arguments.
    """
    clean = strip_ansi(logs)
    return [hint.cli if for_cli else hint.python for hint in _HINTS if hint.pattern.search(clean)]


class ProbeOutcome(Enum):
    """What one readiness probe saw."""

    NOT_LISTENING = "not listening"  # connection refused/reset: still loading
    LOADING = "loading"  # the port answers but /health or the tiny generate is not OK yet
    UNAUTHORIZED = "unauthorized"  # the generate got 401: the server has another api key
    READY = "ready"


def probe(base_url: str, *, api_key: str | None, timeout: float, engine: str = "tgi") -> ProbeOutcome:
    """One readiness check: GET /health must be 200, then a one-token generation must be 200 (TGI's
    `/generate`, vLLM's and SGLang's `/v1/completions`)."""
    import httpx2  # the client stack; imported here so the pure parts of this module stay import-light

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx2.Client(base_url=base_url, timeout=timeout, headers=headers) as http:
            health = http.get("/health")
            if health.status_code != 200:
                return ProbeOutcome.LOADING
            if engine == "tgi":
                generated = http.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 1}})
            else:
                generated = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
    except httpx2.TransportError:
        # Refused, reset or timed out while TGI loads: the normal state of a starting server.
        return ProbeOutcome.NOT_LISTENING
    if generated.status_code == 401:
        return ProbeOutcome.UNAUTHORIZED
    return ProbeOutcome.READY if generated.status_code == 200 else ProbeOutcome.LOADING


def backoff_delays(first: float = 0.25, factor: float = 2.0, cap: float = 1.0) -> Iterator[float]:
    """Probe intervals: short at first (the emulator is up in a second), then steady at `cap`."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * factor)


class WaitOutcome(Enum):
    """How `wait_for_ready` ended."""

    READY = "ready"
    EXITED = "exited"
    TIMEOUT = "timeout"
    UNAUTHORIZED = "unauthorized"


def wait_for_ready(
    *,
    check_probe: Callable[[float], ProbeOutcome],
    container_exited: Callable[[], bool],
    pump_logs: Callable[[], None],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    delays: Iterable[float] | None = None,
) -> WaitOutcome:
    """Probe until ready, the container exits, the server refuses our key, or `timeout` seconds pass.

    Every round reads new log lines (for progress), checks the container first (a crash wins over a
    refused connection) and then probes with at most the time that is left.
    """
    deadline = clock() + timeout
    for delay in delays if delays is not None else backoff_delays():
        pump_logs()
        if container_exited():
            return WaitOutcome.EXITED
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitOutcome.TIMEOUT
        outcome = check_probe(min(remaining, 30.0))
        if outcome is ProbeOutcome.READY:
            pump_logs()
            return WaitOutcome.READY
        if outcome is ProbeOutcome.UNAUTHORIZED:
            return WaitOutcome.UNAUTHORIZED
        remaining = deadline - clock()
        if remaining <= 0:
            pump_logs()
            return WaitOutcome.EXITED if container_exited() else WaitOutcome.TIMEOUT
        sleep(min(delay, remaining))
    return WaitOutcome.TIMEOUT  # only reached with a finite `delays` (tests)


def print_progress(event: ProgressEvent) -> None:
    """The default progress callback: one plain line per event on stderr."""
    detail = f" {(event.current or 0) / 1e9:.2f}/{event.total / 1e9:.2f} GB" if event.total else ""
    print(f"[zephyr-tgi] {event.stage.value}: {event.message}{detail}", file=sys.stderr, flush=True)


class PullProgress:
    """Folds the docker SDK's streaming pull events into occasional byte-level progress events."""

    def __init__(self, image: str, *, interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._image = image
        self._interval = interval
        self._clock = clock
        self._last_emit: float | None = None
        self._layers: dict[str, tuple[int, int]] = {}
        self._done: set[str] = set()

    def update(self, event: Mapping[str, Any]) -> ProgressEvent | None:
        """Record one pull event; return a progress event at most every `interval` seconds (and at the end)."""
        status = str(event.get("status", ""))
        layer = event.get("id")
        detail = event.get("progressDetail") or {}
        if isinstance(layer, str):
            if status == "Downloading" and detail.get("total"):
                self._layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
            elif status in ("Download complete", "Pull complete", "Already exists"):
                self._done.add(layer)
                if layer in self._layers:
                    total = self._layers[layer][1]
                    self._layers[layer] = (total, total)
            elif status in ("Pulling fs layer", "Waiting"):
                self._layers.setdefault(layer, (0, 0))
        final = status.startswith("Status:")
        now = self._clock()
        if not final and self._last_emit is not None and now - self._last_emit < self._interval:
            return None
        self._last_emit = now
        current = sum(c for c, _ in self._layers.values())
        total = sum(t for _, t in self._layers.values())
        layers = len(self._layers)
        message = status if final else f"{self._image}: {len(self._done)}/{layers} layers"
        return ProgressEvent(Stage.PULL, message, current=current, total=total or None)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***` (TGI prints its parsed Args, api key included)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
