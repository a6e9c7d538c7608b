"""How the launcher's error messages name a setting: as a `TGIServer` argument, or as a `zephyr-tgi serve` flag.

The same failure needs different next steps for a Python caller (`gpus=None`) and for the person at the
terminal (`--gpus none`); `TGIServer(messages_for="cli")` picks the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CLI", "PYTHON", "Audience", "Wording", "wording_for"]

Audience = Literal["python", "cli"]


@dataclass(frozen=True, slots=True)
class Wording:
    """The phrases that differ between the Python API and the command line."""

    no_gpu: str  # run a CPU-only image
    skip_gpu_check: str  # start although `docker info` lists no NVIDIA runtime
    other_image: str  # choose another image
    other_port: str  # choose another host port
    remove_named: str  # a container of that name already exists
    longer_startup: str  # allow a longer start-up
    same_api_key: str  # a reused server wants another key
    settings: str  # what the settings are called as a whole
    field_names: dict[str, str]  # LaunchConfig field -> how to name it
    startup_timeout: str  # the name of the start-up time limit
    exposed: str  # "{host}": the port is published beyond loopback without a key
    exposure_advice: str
    for_cli: bool  # crash hints (readiness.failure_hints) in flags too


PYTHON = Wording(
    no_gpu="pass gpus=None",
    skip_gpu_check="pass check_gpu_runtime=False",
    other_image="pass image=... to use another one",
    other_port="pass another port= or port=None for a free one",
    remove_named="remove that container or pass another name=",
    longer_startup="raise startup_timeout",
    same_api_key="pass the same api_key",
    settings="invalid TGIServer settings",
    field_names={},
    startup_timeout="startup_timeout",
    exposed="TGIServer publishes TGI on {host} without an api_key",
    exposure_advice="Pass api_key=... or keep host='127.0.0.1'",
    for_cli=False,
)

CLI = Wording(
    no_gpu="add --gpus none",
    skip_gpu_check="add --skip-gpu-check",
    other_image="pass --image IMAGE to use another one",
    other_port="pass another --port, or leave --port out for a free one",
    remove_named="remove it with `zephyr-tgi down NAME` (`zephyr-tgi ps` lists them)",
    longer_startup="raise --startup-timeout",
    same_api_key="pass the same --api-key",
    settings="invalid `zephyr-tgi serve` options",
    field_names={
        "variant": "--variant",
        "gpus": "--gpus",
        "port": "--port",
        "host": "--host",
        "image": "--image",
        "api_key": "--api-key",
    },
    startup_timeout="--startup-timeout",
    exposed="`serve --host {host}` publishes TGI without --api-key",
    exposure_advice="Pass --api-key, or leave --host out to keep 127.0.0.1",
    for_cli=True,
)


def wording_for(audience: Audience) -> Wording:
    """The wording for `audience`.

    Raises:
        ValueError: an unknown audience.
    """
    if audience == "python":
        return PYTHON
    if audience == "cli":
        return CLI
    raise ValueError(f"messages_for must be 'python' or 'cli', got {audience!r}")
