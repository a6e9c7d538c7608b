"""Reports: JSON that loads back, markdown tables, PNG plots and the line of advice."""

from __future__ import annotations

import json
from pathlib import Path

from zephyr_tgi.bench import (
    SLO,
    Bounds,
    LoadResult,
    RequestRecord,
    StepResult,
    Sweep,
    VariantComparison,
    VariantOutcome,
    advice,
    load_markdown,
    plan_variants,
    resolve_variants,
    summarize,
    write_reports,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _step(users: int, ttft: float) -> StepResult:
    records = [
        RequestRecord(started=0.0, input_tokens=20, token_times=[ttft + 0.02 * i for i in range(10)], ended=ttft + 0.18)
        for _ in range(users)
    ]
    return summarize(records, SLO(), label=f"{users} users", users=users)


def _result(url: str, ttfts: list[float]) -> LoadResult:
    steps = [_step(2**i, ttft) for i, ttft in enumerate(ttfts)]
    meeting = [s.users for s in steps if s.meets_slo and s.users is not None]
    return LoadResult(
        url=url,
        profile=Sweep(max_users=2 ** (len(ttfts) - 1)),
        bounds=Bounds(),
        slo=SLO(),
        steps=steps,
        users_meeting_slo=max(meeting, default=None),
    )


def test_a_load_report_is_json_markdown_and_a_plot(tmp_path: Path) -> None:
    result = _result("http://127.0.0.1:8080", [0.05, 0.08, 0.4])

    written = write_reports(result, tmp_path)

    assert [p.name for p in written] == ["results.json", "report.md", "throughput_vs_latency.png"]
    assert LoadResult.model_validate_json((tmp_path / "results.json").read_text()) == result
    markdown = (tmp_path / "report.md").read_text()
    assert "| 4 users |" in markdown
    assert "Concurrent users meeting the SLO: **2**." in markdown
    assert (tmp_path / "throughput_vs_latency.png").read_bytes().startswith(PNG)


def test_plots_can_be_left_out(tmp_path: Path) -> None:
    written = write_reports(_result("http://x", [0.05]), tmp_path, plots=False)

    assert [p.name for p in written] == ["results.json", "report.md"]


def _comparison() -> VariantComparison:
    plans = plan_variants(resolve_variants("main,gptq-4bit-32g-actorder_True,gptq-8bit-32g-actorder_True"), 8.0)
    return VariantComparison(
        free_gb=8.0,
        outcomes=[
            VariantOutcome(plan=plans[0], result=_result("http://a", [0.05, 0.08, 0.09])),
            VariantOutcome(plan=plans[1], result=_result("http://b", [0.05, 0.3, 0.5])),
            VariantOutcome(plan=plans[2]),
        ],
    )


def test_the_advice_names_the_branch_serving_the_most_users() -> None:
    line = advice(_comparison())

    assert line.startswith("Use main: it serves 4 concurrent users within the SLO")


def test_a_comparison_report_has_both_plots_and_every_branch(tmp_path: Path) -> None:
    written = write_reports(_comparison(), tmp_path)

    names = [p.name for p in written]
    assert names == ["results.json", "report.md", "throughput_vs_latency.png", "users_meeting_slo.png"]
    for png in written[2:]:
        assert png.read_bytes().startswith(PNG)
    markdown = (tmp_path / "report.md").read_text()
    assert "| gptq-8bit-32g-actorder_True |" in markdown
    assert "skipped: needs about" in markdown
    assert "Use main" in markdown
    assert json.loads((tmp_path / "results.json").read_text())["free_gb"] == 8.0


def test_an_interrupted_run_says_so() -> None:
    result = _result("http://x", [0.05]).model_copy(update={"interrupted": True})

    assert "interrupted" in load_markdown(result)


def test_a_busy_load_generator_is_flagged() -> None:
    result = _result("http://x", [0.05, 0.06])
    busy = result.steps[1].model_copy(update={"client_cpu_seconds": 0.95 * result.steps[1].duration})
    flagged = result.model_copy(update={"steps": [result.steps[0], busy]})

    assert "Warning: the load generator used 95% of its CPU at 2 users" in load_markdown(flagged)
    assert "Warning" not in load_markdown(result)


def test_among_equally_good_branches_the_higher_quality_one_is_advised() -> None:
    comparison = _comparison()
    same = comparison.outcomes[0].result
    assert same is not None
    slightly_faster_small = comparison.outcomes[0]
    larger = comparison.outcomes[1].model_copy(update={"result": same})
    tied = comparison.model_copy(update={"outcomes": [slightly_faster_small, larger]})

    assert advice(tied).startswith("Use gptq-4bit-32g-actorder_True:")
