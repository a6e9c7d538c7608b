"""The manifests committed under deploy/kubernetes/ are exactly what the code renders today (`make kubernetes`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from zephyr_tgi._deploy.catalog import committed_deployment, rendered_files
from zephyr_tgi._deploy.kubernetes import ENGINES, render_manifests
from zephyr_tgi._launcher.variants import GPTQVariant

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
SCRIPT = ROOT / "scripts" / "render_kubernetes.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=60)


def test_the_committed_manifests_are_current() -> None:
    result = run_script("--check")

    assert result.returncode == 0, result.stderr  # if not: `make kubernetes`, then commit deploy/kubernetes/


def test_there_is_one_file_per_engine_and_branch() -> None:
    expected = {
        f"{engine}/{variant.value}/{name}"
        for engine in ENGINES
        for variant in GPTQVariant
        for name in ("manifests.yaml", "kustomization.yaml")
    }

    assert set(rendered_files()) == expected
    assert {path.relative_to(DEPLOY).as_posix() for path in DEPLOY.glob("*/*/*.yaml")} == expected


def test_each_branch_directory_is_a_kustomize_base_of_its_manifests() -> None:
    for engine in ENGINES:
        for variant in GPTQVariant:
            text = (DEPLOY / engine / variant.value / "kustomization.yaml").read_text(encoding="utf-8")
            assert yaml.safe_load(text) == {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["manifests.yaml"],
            }


def test_each_committed_file_reads_as_its_manifests() -> None:
    for engine in ENGINES:
        for variant in GPTQVariant:
            text = (DEPLOY / engine / variant.value / "manifests.yaml").read_text(encoding="utf-8")
            assert list(yaml.safe_load_all(text)) == render_manifests(committed_deployment(engine, variant))


def test_the_check_names_changed_missing_and_stale_files(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    edited = copy / "vllm" / "main" / "manifests.yaml"
    edited.write_text(edited.read_text(encoding="utf-8").replace("replicas: 2", "replicas: 5"), encoding="utf-8")
    (copy / "tgi" / "gptq-4bit-32g-actorder_True" / "kustomization.yaml").unlink()
    (copy / "tgi" / "gptq-2bit").mkdir()
    (copy / "tgi" / "gptq-2bit" / "manifests.yaml").write_text("---\n", encoding="utf-8")

    result = run_script("--check", "--directory", str(copy))

    assert result.returncode == 1
    named = {line.strip() for line in result.stderr.splitlines()[1:]}
    assert named == {
        "vllm/main/manifests.yaml",
        "tgi/gptq-4bit-32g-actorder_True/kustomization.yaml",
        "tgi/gptq-2bit/manifests.yaml",
    }


def test_writing_repairs_the_directory(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    (copy / "tgi" / "gptq-2bit").mkdir(parents=True)
    (copy / "tgi" / "gptq-2bit" / "manifests.yaml").write_text("---\n", encoding="utf-8")

    assert run_script("--directory", str(copy)).returncode == 0

    assert run_script("--check", "--directory", str(copy)).returncode == 0
    assert not (copy / "tgi" / "gptq-2bit").exists()
