"""`zephyr-tgi deploy kubernetes`: the same manifests as the Python renderer, knobs as flags, errors in one line."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from zephyr_tgi._cli.main import cli
from zephyr_tgi._deploy.kubernetes import KubernetesDeployment, SecretRef, Toleration, render_yaml
from zephyr_tgi._launcher.variants import GPTQVariant

DOCS = Path(__file__).resolve().parents[2] / "docs"


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, ["deploy", "kubernetes", *args])


def test_the_defaults_print_the_default_deployment() -> None:
    result = invoke()

    assert result.exit_code == 0, result.output
    assert result.stdout == render_yaml(KubernetesDeployment())


def test_every_flag_reaches_the_manifests() -> None:
    result = invoke(
        "--engine", "sglang", "--variant", "gptq-8bit-32g-actorder_True", "--replicas", "4", "--name", "chat",
        "--namespace", "llm", "--image", "lmsysorg/sglang:v0.5.24", "--tensor-parallel", "2", "--data-parallel", "2",
        "--max-input-tokens", "2000", "--max-total-tokens", "3000", "--api-key-secret", "llm-key",
        "--hf-token-secret", "hub:read", "--cache-pvc", "hf", "--cache-size", "10Gi", "--shm-size", "2Gi",
        "--node-selector", "gpu=l4", "--node-selector", "zone=b", "--toleration", "dedicated=llm:NoSchedule",
        "--startup-timeout", "900", "--service-type", "NodePort", "--extra-arg", "--max-running-requests",
        "--extra-arg", "64",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == render_yaml(
        KubernetesDeployment(
            engine="sglang",
            variant=GPTQVariant.BITS8_GROUP32,
            replicas=4,
            name="chat",
            namespace="llm",
            image="lmsysorg/sglang:v0.5.24",
            tensor_parallel=2,
            data_parallel=2,
            max_input_tokens=2000,
            max_total_tokens=3000,
            api_key_secret=SecretRef(name="llm-key", key="api-key"),
            hf_token_secret=SecretRef(name="hub", key="read"),
            cache_claim="hf",
            cache_size="10Gi",
            shm_size="2Gi",
            node_selector={"gpu": "l4", "zone": "b"},
            tolerations=(Toleration(key="dedicated", value="llm", effect="NoSchedule"),),
            startup_timeout=900,
            service_type="NodePort",
            extra_args=("--max-running-requests", "64"),
        )
    )


def test_a_statefulset_prints_the_replica_urls_for_the_client() -> None:
    result = invoke("--workload", "StatefulSet", "--replicas", "2", "--cache-per-pod", "40Gi")

    assert result.exit_code == 0, result.output
    assert result.stdout == render_yaml(KubernetesDeployment(workload="StatefulSet", replicas=2, cache_per_pod="40Gi"))
    assert (
        "ZEPHYR_TGI_URL=http://zephyr-tgi-0.zephyr-tgi-pods:80,http://zephyr-tgi-1.zephyr-tgi-pods:80" in result.stderr
    )


def test_no_hf_token_drops_the_variable() -> None:
    result = invoke("--no-hf-token")

    assert result.exit_code == 0, result.output
    assert "HF_TOKEN" not in result.stdout


def test_output_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "zephyr.yaml"

    result = invoke("--engine", "vllm", "-o", str(target))

    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render_yaml(KubernetesDeployment(engine="vllm"))
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data-parallel", "2"), "error: invalid Kubernetes deployment settings: TGI has no data parallelism"),
        (("--replicas", "-1"), "error: invalid Kubernetes deployment settings: --replicas:"),
        (("--node-selector", "gpu"), "error: --node-selector takes KEY=VALUE, got 'gpu'"),
        (("--api-key-secret", "Bad_Name"), "error: invalid secret reference 'Bad_Name'"),
        (("--toleration", "gpu"), "error: invalid toleration 'gpu'"),
        (("--name", "UPPER"), "error: invalid Kubernetes deployment settings: --name:"),
        (("--cache-per-pod", "4Gi"), "error: invalid Kubernetes deployment settings: a cache claim per pod needs"),
    ],
)
def test_bad_flags_fail_in_one_line_before_printing_anything(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message)


def test_the_cli_page_documents_every_flag_of_deploy_kubernetes() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    group = cli.commands["deploy"]
    assert isinstance(group, click.Group)
    command = group.commands["kubernetes"]

    assert "### `deploy kubernetes`" in text
    flags = [flag for param in command.params for flag in getattr(param, "opts", []) if flag.startswith("--")]
    assert [flag for flag in flags if f"`{flag}" not in text] == []
