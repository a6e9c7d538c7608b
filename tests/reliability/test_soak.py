"""The fault-injection soak, bounded for CI: no violation, and every scenario really exercised its fault.

The full run (1,000 requests per scenario, in process and in the container) is `make soak`
(`python -m tests.reliability.soak`); here each in-process scenario sends 40 requests and each container
scenario 20. The first tests check the harness itself: its oracle and its violation detectors.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import docker_unavailable
from tests.reliability.soak import (
    EMULATOR_IMAGE,
    SCENARIO_NAMES,
    SCENARIOS,
    ScenarioReport,
    SoakReport,
    SoakRequest,
    Variant,
    classify,
    expected_text,
    render_markdown,
    render_text,
    run_soak,
)
from zephyr_tgi import APIConnectionError, ZephyrClient
from zephyr_tgi.testing import TGIEmulator, render_zephyr_prompt

IN_PROCESS_REQUESTS = 40
CONTAINER_REQUESTS = 20
IN_PROCESS = [s.name for s in SCENARIOS if not s.container_only]


def _request(path: str = "chat_stream", expected: str = "Hello there.") -> SoakRequest:
    return SoakRequest(0, path, "hi", Variant(), "prompt", expected)


def _failures(report: ScenarioReport) -> str:
    return f"{report.to_json()}"


# --- the harness -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [Variant(), Variant(max_new_tokens=9), Variant(stop=(".",))])
def test_the_oracle_is_what_a_fault_free_emulator_answers(variant: Variant) -> None:
    with TGIEmulator() as emulator, ZephyrClient(emulator.url) as client:
        for n in range(10):
            content = f"oracle check {n}"
            prompt = render_zephyr_prompt([("system", ""), ("user", content)])
            assert client.chat(content, params=variant.params()).text == expected_text(prompt, variant)


def test_a_stream_retried_after_its_first_chunk_is_a_violation() -> None:
    request = _request()
    request.chunks, request.result_text, request.first_chunk_at = ["Hello", " there."], "Hello there.", 10
    request.retries = [(11, "POST /generate_stream", "APIConnectionError")]
    classify(request)
    assert request.label == "exact"
    assert request.violations == ["retry_after_token"]


def test_a_stream_retried_silently_after_its_first_chunk_is_a_violation() -> None:
    request = _request()
    request.chunks, request.result_text, request.first_chunk_at = ["Hello", " there."], "Hello there.", 10
    request.server_requests = 2  # the emulator saw two requests, the client logged no retry
    classify(request)
    assert request.violations == ["retry_after_token"]


def test_retries_before_the_first_chunk_are_allowed() -> None:
    request = _request()
    request.chunks, request.result_text, request.first_chunk_at = ["Hello", " there."], "Hello there.", 10
    request.retries = [(3, "POST /generate_stream", "OverloadedError"), (5, "GET /info", "APIConnectionError")]
    request.server_requests = 2
    classify(request)
    assert (request.label, request.violations) == ("exact", [])


def test_a_duplicated_stream_is_a_violation() -> None:
    request = _request()
    request.chunks, request.result_text, request.first_chunk_at = ["Hello", "Hello there."], "Hello there.", 1
    classify(request)
    assert request.violations == ["spliced_or_duplicated"]


def test_text_shown_before_an_error_must_be_a_prefix_of_the_answer() -> None:
    request = _request()
    request.chunks, request.first_chunk_at = ["Hello", " world"], 1
    request.error = APIConnectionError("cut")
    classify(request)
    assert request.label == "typed_error:APIConnectionError"
    assert request.violations == ["spliced_or_duplicated"]


def test_an_exception_outside_the_hierarchy_is_a_violation() -> None:
    request = _request(path="chat")
    request.error = KeyError("token")
    classify(request)
    assert request.violations == ["foreign_exception:KeyError"]


def test_a_wrong_text_and_a_hang_are_violations() -> None:
    wrong, hung = _request(path="chat"), _request(path="async_chat")
    wrong.result_text = "Hello"
    hung.hung = True
    classify(wrong)
    classify(hung)
    assert (wrong.violations, hung.violations) == (["wrong_text"], ["hang"])


def test_an_answer_the_server_never_saw_is_a_violation() -> None:
    request = _request(path="async_chat")
    request.result_text, request.server_requests = "Hello there.", 0
    classify(request)
    assert request.violations == ["not_seen_by_server"]


def test_a_batch_item_is_not_held_to_logged_retries() -> None:
    # batch_chat retries on the client's own threads, where they cannot be attributed.
    request = _request(path="batch_chat")
    request.result_text, request.server_requests = "Hello there.", 3
    classify(request)
    assert (request.label, request.violations) == ("exact", [])


# --- in process --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process_reports() -> dict[str, ScenarioReport]:
    report = run_soak(IN_PROCESS_REQUESTS, scenarios=IN_PROCESS, scenario_timeout=60.0)
    print(render_text(report))
    assert report.containers_left == []
    return {scenario.name: scenario for scenario in report.scenarios}


@pytest.mark.parametrize("name", IN_PROCESS)
def test_every_request_ends_exact_or_in_a_typed_error(name: str, in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports[name]
    assert report.error is None, report.error
    assert not report.violations, _failures(report)
    assert report.completed == report.requested == IN_PROCESS_REQUESTS
    assert all(label == "exact" or label.startswith("typed_error:") for label in report.outcomes)
    assert set(report.by_path) == {"chat", "chat_stream", "batch_chat", "async_chat", "async_chat_stream"}


@pytest.mark.parametrize("name", IN_PROCESS)
def test_every_scenario_exercises_its_fault(name: str, in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports[name]
    assert report.exercised, {k: report.evidence[k] for k in report.required_evidence}


def test_without_faults_every_answer_is_exact(in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports["baseline"]
    assert report.outcomes == {"exact": IN_PROCESS_REQUESTS}
    assert report.evidence["retries"] == 0


def test_a_loading_server_is_ridden_out(in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports["loading_phase"]
    assert report.outcomes["exact"] >= IN_PROCESS_REQUESTS * 0.8, report.outcomes


def test_overload_answers_429_and_streams_retry_before_their_first_token(
    in_process_reports: dict[str, ScenarioReport],
) -> None:
    report = in_process_reports["overload_burst"]
    assert report.evidence["overloaded"] > 0
    assert report.evidence["streams_retried_before_first_token"] > 0


def test_cut_streams_raise_and_show_only_a_prefix(in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports["stream_cut_midway"]
    assert report.evidence["partial_streams"] > 0
    assert set(report.outcomes) <= {"exact", "typed_error:APIConnectionError"}
    # Non-streaming calls are untouched by stream cuts.
    assert report.by_path["chat"] == {"exact": report.by_path["chat"].total()}


def test_in_band_errors_after_tokens_are_raised_not_retried(in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports["in_band_error"]
    assert report.evidence["typed_error:GenerationError"] > 0
    assert report.evidence["typed_error:IncompleteGenerationError"] > 0
    assert report.evidence["retry:OverloadedError"] > 0


def test_slow_tokens_time_out(in_process_reports: dict[str, ScenarioReport]) -> None:
    report = in_process_reports["slow_tokens"]
    assert report.outcomes == {"typed_error:APITimeoutError": IN_PROCESS_REQUESTS}


def test_the_report_renders_as_text_and_markdown() -> None:
    report = run_soak(5, scenarios=["baseline"])
    text, markdown = render_text(report), render_markdown(report)
    assert "baseline" in text
    assert text.endswith("OK")
    assert markdown.startswith("| scenario | mode | requests | exact |")
    assert report.exit_code == 0


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        run_soak(1, scenarios=["nope"])


# --- in the emulator container -------------------------------------------------------------------------------


def _docker_or_skip() -> None:
    """Skip without a Docker daemon or the image, unless ZEPHYR_TGI_REQUIRE_DOCKER=1 makes that a failure."""
    try:
        import docker
        import docker.errors

        client = docker.from_env(timeout=30)
        client.ping()
        try:
            client.images.get(os.environ.get("ZEPHYR_TGI_EMULATOR_IMAGE", EMULATOR_IMAGE))
        finally:
            client.close()
    except Exception as exc:  # any reason Docker or the image is unusable
        docker_unavailable(f"Docker or the emulator image is not available: {exc}")


@pytest.fixture(scope="module")
def container_report() -> SoakReport:
    _docker_or_skip()
    report = run_soak(
        CONTAINER_REQUESTS,
        in_process=False,
        container=True,
        image=os.environ.get("ZEPHYR_TGI_EMULATOR_IMAGE", EMULATOR_IMAGE),
        scenario_timeout=60.0,
    )
    print(render_text(report))
    return report


def _scenario(report: SoakReport, name: str) -> ScenarioReport:
    return next(scenario for scenario in report.scenarios if scenario.name == name)


@pytest.mark.docker
@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_against_the_container_nothing_is_lost(name: str, container_report: SoakReport) -> None:
    report = _scenario(container_report, name)
    assert report.error is None, report.error
    assert not report.violations, _failures(report)
    assert report.completed == report.requested == CONTAINER_REQUESTS
    assert report.exercised, {k: report.evidence[k] for k in report.required_evidence}


@pytest.mark.docker
def test_a_killed_container_ends_every_request_in_a_connection_error(container_report: SoakReport) -> None:
    report = _scenario(container_report, "container_killed")
    assert report.evidence["in_flight_at_kill"] > 0
    assert set(report.outcomes) <= {"exact", "typed_error:APIConnectionError", "typed_error:APITimeoutError"}


@pytest.mark.docker
def test_no_container_is_left_behind(container_report: SoakReport) -> None:
    assert container_report.containers_left == []
