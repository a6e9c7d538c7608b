"""docker/compose.yaml's vLLM and SGLang profiles run what the launcher runs (the template's path aside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from zephyr_tgi._launcher.args import build_launcher_args, make_config
from zephyr_tgi._launcher.engine_args import CHAT_TEMPLATE_PATH, ENGINE_CONTAINERS

COMPOSE = Path(__file__).parents[2] / "docker" / "compose.yaml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_each_engine_has_a_profile_of_its_own_with_the_launchers_arguments(engine: str) -> None:
    service = _services()[engine]
    assert service["profiles"] == [engine]
    container = ENGINE_CONTAINERS[engine]
    assert service["image"] == container.image
    assert service["ports"] == [f"127.0.0.1:${{ZEPHYR_{engine.upper()}_PORT:-{container.port}}}:{container.port}"]
    if container.entrypoint is not None:
        assert service["entrypoint"] == list(container.entrypoint)
    expected = build_launcher_args(make_config(engine=engine))
    expected = [arg.replace(CHAT_TEMPLATE_PATH, "/templates/zephyr_chat_template.jinja") for arg in expected]
    expected = ["${ZEPHYR_TGI_REVISION:-main}" if arg == "main" else arg for arg in expected]
    assert service["command"] == expected


def test_tgi_stays_the_default_service() -> None:
    assert "profiles" not in _services()["tgi"]
