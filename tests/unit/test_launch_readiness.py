"""Readiness decisions: log stages, crash hints, the wait loop, pull progress, redaction."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from zephyr_tgi._launcher import readiness
from zephyr_tgi._launcher.readiness import (
    LineSplitter,
    ProbeOutcome,
    ProgressEvent,
    PullProgress,
    Stage,
    WaitOutcome,
    backoff_delays,
    failure_hints,
    parse_stage,
    print_progress,
    probe,
    redact,
    tail,
    wait_for_ready,
)
from zephyr_tgi.testing import TGIEmulator

# Real TGI 3.x log lines (compact tracing format), one per stage.
TGI_LINES = {
    Stage.DOWNLOAD: "2025-12-18T10:00:00.100000Z  INFO download: text_generation_launcher: Starting check and "
    "download process for TheBloke/zephyr-7B-alpha-GPTQ",
    Stage.DOWNLOADED: "2025-12-18T10:00:09.000000Z  INFO download: text_generation_launcher: Successfully "
    "downloaded weights for TheBloke/zephyr-7B-alpha-GPTQ",
    Stage.SHARD_START: "2025-12-18T10:00:09.100000Z  INFO shard-manager: text_generation_launcher: Starting shard "
    "rank=0",
    Stage.SHARD_READY: "2025-12-18T10:00:30.000000Z  INFO shard-manager: text_generation_launcher: Shard ready in "
    "20.9s rank=0",
    Stage.WEBSERVER: "2025-12-18T10:00:30.100000Z  INFO text_generation_launcher: Starting Webserver",
    Stage.WARMUP: "2025-12-18T10:00:31.000000Z  INFO text_generation_router_v3: backends/v3/src/lib.rs:125: "
    "Warming up model",
}


@pytest.mark.parametrize("stage", list(TGI_LINES))
def test_each_tgi_start_line_maps_to_its_stage(stage: Stage) -> None:
    event = parse_stage(TGI_LINES[stage])
    assert event is not None
    assert event.stage is stage


def test_the_event_message_drops_timestamp_level_and_target() -> None:
    event = parse_stage(TGI_LINES[Stage.SHARD_START])
    assert event is not None
    assert event.message == "Starting shard rank=0"


def test_colour_codes_do_not_hide_a_stage() -> None:
    coloured = (
        "\x1b[2m2025-12-18T10:00:31Z\x1b[0m \x1b[32m INFO\x1b[0m "
        "\x1b[2mtext_generation_router_v3\x1b[0m: Warming up model"
    )
    event = parse_stage(coloured)
    assert event is not None
    assert event.stage is Stage.WARMUP


@pytest.mark.parametrize(
    "line",
    ["", "2025-12-18T10:00:00Z  INFO text_generation_launcher: Args {", "Using attention flashinfer", "Connected"],
)
def test_other_lines_are_not_stages(line: str) -> None:
    assert parse_stage(line) is None


# -- hints -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "keyword"),
    [
        ("RuntimeError: Found no NVIDIA driver on your system.", "NVIDIA Container Toolkit"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "max_batch_prefill_tokens"),
        ("Not enough memory to handle 4096 prefill tokens.", "max_batch_prefill_tokens"),
        ("huggingface_hub.errors.RevisionNotFoundError: 404 Client Error. Revision Not Found", "revision"),
        ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo", "HF_TOKEN"),
        ("huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found", "model_id"),
        ("RuntimeError: CUDA error: no kernel image is available for execution on the device", "Turing"),
        ("TypeError: '>' not supported ... config.sliding_window is None", "#1342"),
        ("error: unexpected argument '--frobnicate' found", "extra_args"),
    ],
)
def test_crash_logs_get_a_hint_for_the_common_causes(log: str, keyword: str) -> None:
    hints = failure_hints(f"INFO starting\n{log}\nERROR Shard 0 failed to start")
    assert any(keyword in hint for hint in hints), hints


def test_no_hint_for_logs_that_match_nothing() -> None:
    assert failure_hints("INFO all good\nINFO still good") == []


def test_a_gated_repo_is_not_mistaken_for_a_missing_revision() -> None:
    hints = failure_hints("GatedRepoError: 401 Client Error: Unauthorized for url")
    assert not any("revision" in hint for hint in hints)


# -- log helpers -------------------------------------------------------------------------------------------


def test_line_splitter_keeps_partial_lines_for_the_next_chunk() -> None:
    splitter = LineSplitter()
    assert splitter.feed("one\ntw") == ["one"]
    assert splitter.feed("o\r\nthree") == ["two"]
    assert splitter.flush() == ["three"]
    assert splitter.flush() == []


def test_tail_keeps_the_last_lines_without_colours() -> None:
    text = "\n".join(f"\x1b[32mline {i}\x1b[0m" for i in range(100)) + "\n"
    assert tail(text, 3) == "line 97\nline 98\nline 99"


def test_redact_hides_every_secret() -> None:
    assert redact('Args { api_key: Some("k3y"), token: hf_x }', ["k3y", "hf_x", ""]) == (
        'Args { api_key: Some("***"), token: *** }'
    )


# -- the wait loop -----------------------------------------------------------------------------------------


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def outcomes(*values: ProbeOutcome) -> Iterator[ProbeOutcome]:
    yield from values
    while True:
        yield values[-1]


def run_wait(
    probes: Iterator[ProbeOutcome], *, exits_after: int | None = None, timeout: float = 10.0
) -> tuple[WaitOutcome, Clock, list[str]]:
    clock = Clock()
    calls: list[str] = []
    rounds = 0

    def exited() -> bool:
        calls.append("status")
        return exits_after is not None and rounds >= exits_after

    def check(probe_timeout: float) -> ProbeOutcome:
        nonlocal rounds
        rounds += 1
        calls.append("probe")
        assert probe_timeout > 0
        return next(probes)

    outcome = wait_for_ready(
        check_probe=check,
        container_exited=exited,
        pump_logs=lambda: calls.append("logs"),
        timeout=timeout,
        clock=clock,
        sleep=clock.sleep,
    )
    return outcome, clock, calls


def test_ready_once_the_probe_succeeds() -> None:
    outcome, clock, _ = run_wait(outcomes(ProbeOutcome.NOT_LISTENING, ProbeOutcome.LOADING, ProbeOutcome.READY))
    assert outcome is WaitOutcome.READY
    assert clock.sleeps == [0.25, 0.5]


def test_a_container_exit_is_noticed_on_the_next_round_not_at_the_timeout() -> None:
    outcome, clock, calls = run_wait(outcomes(ProbeOutcome.NOT_LISTENING), exits_after=2, timeout=1800)
    assert outcome is WaitOutcome.EXITED
    assert clock.now < 1
    assert calls[:3] == ["logs", "status", "probe"]  # the status is checked before every probe


def test_timeout_when_the_server_never_answers() -> None:
    outcome, clock, _ = run_wait(outcomes(ProbeOutcome.NOT_LISTENING), timeout=5)
    assert outcome is WaitOutcome.TIMEOUT
    assert clock.now == pytest.approx(5)
    assert max(clock.sleeps) == 1.0  # polling stays frequent


def test_a_401_on_the_tiny_generate_stops_waiting() -> None:
    outcome, _, _ = run_wait(outcomes(ProbeOutcome.UNAUTHORIZED))
    assert outcome is WaitOutcome.UNAUTHORIZED


def test_backoff_starts_short_and_is_capped() -> None:
    delays = backoff_delays()
    assert [next(delays) for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_probe_of_a_port_nobody_listens_on_reads_as_not_listening() -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused, like a loading TGI
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert probe(f"http://127.0.0.1:{port}", api_key=None, timeout=2.0) is ProbeOutcome.NOT_LISTENING


# -- progress ----------------------------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pull_progress_sums_layer_bytes_and_is_throttled() -> None:
    ticks = Ticks()
    tracker = PullProgress("img:1", interval=2.0, clock=ticks)
    first = tracker.update({"status": "Pulling fs layer", "id": "a"})
    assert first is not None
    assert first.stage is Stage.PULL
    assert tracker.update({"status": "Downloading", "id": "a", "progressDetail": {"current": 5, "total": 10}}) is None
    ticks.now = 3.0
    event = tracker.update({"status": "Downloading", "id": "b", "progressDetail": {"current": 1, "total": 30}})
    assert event is not None
    assert (event.current, event.total) == (6, 40)
    assert event.message == "img:1: 0/2 layers"


def test_pull_progress_always_reports_the_final_status() -> None:
    ticks = Ticks()
    tracker = PullProgress("img:1", clock=ticks)
    tracker.update({"status": "Pulling fs layer", "id": "a"})
    tracker.update({"status": "Pull complete", "id": "a"})
    final = tracker.update({"status": "Status: Downloaded newer image for img:1"})
    assert final is not None
    assert final.message.startswith("Status:")


def test_default_progress_prints_one_plain_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    print_progress(ProgressEvent(Stage.WARMUP, "Warming up model"))
    print_progress(ProgressEvent(Stage.PULL, "img", current=500_000_000, total=2_000_000_000))
    err = capsys.readouterr().err.splitlines()
    assert err == ["[zephyr-tgi] warmup: Warming up model", "[zephyr-tgi] pull: img 0.50/2.00 GB"]


def test_probe_sees_loading_then_ready_on_the_emulator() -> None:
    with TGIEmulator() as tgi:
        tgi.set_faults(unavailable_for=60.0)
        assert probe(tgi.url, api_key=None, timeout=5.0) is ProbeOutcome.LOADING
        tgi.set_faults(unavailable_for=0.0)
        assert probe(tgi.url, api_key=None, timeout=5.0) is ProbeOutcome.READY


def test_probe_reports_a_key_the_server_does_not_accept() -> None:
    with TGIEmulator(api_key="right") as tgi:
        assert probe(tgi.url, api_key="wrong", timeout=5.0) is ProbeOutcome.UNAUTHORIZED
        assert probe(tgi.url, api_key="right", timeout=5.0) is ProbeOutcome.READY


@pytest.mark.parametrize("hint", readiness._HINTS, ids=lambda hint: hint.pattern.pattern[:30])
def test_each_crash_hint_has_a_command_line_wording_without_python_arguments(hint: readiness._Hint) -> None:
    assert hint.cli != hint.python
    # Python is named only inside an explicit TGIServer(...) pointer for settings the CLI has no flag for.
    outside_python = re.sub(r"TGIServer\([^)]*\)", "", hint.cli)
    assert not re.search(r"(?<![-\w])[a-z_]+=", outside_python), hint.cli  # `--flag=value` is fine


def test_crash_hints_for_the_command_line_name_flags() -> None:
    log = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB"
    (python,) = failure_hints(log)
    (cli,) = failure_hints(log, for_cli=True)
    assert "max_batch_prefill_tokens" in python
    assert "--variant" in cli
