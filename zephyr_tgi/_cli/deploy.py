"""`zephyr-tgi deploy kubernetes`: manifests for replicas of one engine and GPTQ branch, with the launcher's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["deploy"]

_ENGINES = ("tgi", "vllm", "sglang")
# Settings as the command line names them, for error messages.
_FLAGS = {
    "engine": "--engine",
    "variant": "--variant",
    "replicas": "--replicas",
    "name": "--name",
    "namespace": "--namespace",
    "image": "--image",
    "tensor_parallel": "--tensor-parallel",
    "num_shard": "--tensor-parallel",
    "data_parallel": "--data-parallel",
    "max_input_tokens": "--max-input-tokens",
    "max_total_tokens": "--max-total-tokens",
    "workload": "--workload",
    "cache_per_pod": "--cache-per-pod",
    "cache_claim": "--cache-pvc",
    "cache_size": "--cache-size",
    "shm_size": "--shm-size",
    "startup_timeout": "--startup-timeout",
    "service_type": "--service-type",
    "extra_args": "--extra-arg",
}


@click.group()
def deploy() -> None:
    """Render deployment manifests that run the launcher's exact flags (Kubernetes)."""


@deploy.command("kubernetes")
@click.option("--engine", type=click.Choice(_ENGINES), default="tgi", show_default=True, help="The server to run.")
@click.option(
    "--variant", metavar="BRANCH", default="main", show_default=True, help="GPTQ branch (`zephyr-tgi variants`)."
)
@click.option("--replicas", type=int, default=1, show_default=True, help="Pods, each with its own GPUs and cache.")
@click.option(
    "--workload",
    type=click.Choice(("Deployment", "StatefulSet")),
    default="Deployment",
    show_default=True,
    help="StatefulSet: stable pod names (for a client that balances itself), optional cache claim per pod.",
)
@click.option("--name", help="Name of the Deployment and Service  [default: zephyr-ENGINE]")
@click.option("--namespace", help="Namespace of every object  [default: none: kubectl's current one]")
@click.option("--image", help="The server image  [default: the engine's pinned release]")
@click.option("--tensor-parallel", type=int, default=1, show_default=True, help="GPUs one model copy spans.")
@click.option(
    "--data-parallel",
    type=int,
    default=1,
    show_default=True,
    help="Model copies inside one pod, balanced by the server (vLLM, SGLang).",
)
@click.option("--max-input-tokens", type=int, default=3696, show_default=True, help="Longest prompt accepted.")
@click.option("--max-total-tokens", type=int, default=4096, show_default=True, help="Prompt plus answer, at most.")
@click.option(
    "--api-key-secret", metavar="NAME[:KEY]", help="Require the API key stored in this Secret  [key: api-key]"
)
@click.option(
    "--hf-token-secret",
    metavar="NAME[:KEY]",
    default="hf-token:token",
    show_default=True,
    help="Secret with a Hugging Face token (optional: the pods start without it).",
)
@click.option("--no-hf-token", is_flag=True, help="Do not read a Hugging Face token at all.")
@click.option(
    "--cache-pvc", metavar="CLAIM", help="PersistentVolumeClaim for the Hugging Face cache  [default: emptyDir]"
)
@click.option("--cache-per-pod", metavar="SIZE", help="A StatefulSet's own cache claim per pod, e.g. 30Gi.")
@click.option("--cache-size", default="30Gi", show_default=True, help="Size limit of the emptyDir cache.")
@click.option("--shm-size", default="1Gi", show_default=True, help="Size of /dev/shm (in memory).")
@click.option("--node-selector", metavar="KEY=VALUE", multiple=True, help="Schedule on nodes with this label (repeat).")
@click.option(
    "--toleration",
    metavar="KEY[=VALUE]:EFFECT",
    multiple=True,
    help="Tolerate this taint (repeat)  [default: nvidia.com/gpu:NoSchedule]",
)
@click.option(
    "--startup-timeout",
    type=int,
    default=1800,
    show_default=True,
    metavar="SECONDS",
    help="How long the download and load may take before the pod restarts.",
)
@click.option(
    "--service-type",
    type=click.Choice(("ClusterIP", "NodePort", "LoadBalancer")),
    default="ClusterIP",
    show_default=True,
    help="How the Service is reached.",
)
@click.option("--extra-arg", "extra_args", metavar="ARG", multiple=True, help="One more server argument (repeat).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
def kubernetes(
    *,
    api_key_secret: str | None,
    hf_token_secret: str,
    no_hf_token: bool,
    cache_pvc: str | None,
    node_selector: tuple[str, ...],
    toleration: tuple[str, ...],
    output: Path | None,
    **settings: Any,
) -> None:
    """Print a ConfigMap, a Deployment and a Service for `kubectl apply -f -`.

    The container's arguments are the ones `zephyr-tgi serve` would pass for the same engine and branch.
    """
    from zephyr_tgi._deploy.kubernetes import SecretRef, Toleration, deployment_from, render_yaml
    from zephyr_tgi._errors import ConfigurationError

    settings["api_key_secret"] = (
        SecretRef.parse(api_key_secret, default_key="api-key") if api_key_secret is not None else None
    )
    settings["hf_token_secret"] = None if no_hf_token else SecretRef.parse(hf_token_secret, default_key="token")
    settings["cache_claim"] = cache_pvc
    labels: dict[str, str] = {}
    for assignment in node_selector:
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            raise ConfigurationError(f"--node-selector takes KEY=VALUE, got {assignment!r}")
        labels[key] = value
    settings["node_selector"] = labels
    if toleration:
        settings["tolerations"] = tuple(Toleration.parse(text) for text in toleration)
    deployment = deployment_from(settings, field_names=_FLAGS)
    text = render_yaml(deployment)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    if deployment.workload == "StatefulSet" and deployment.replicas:
        urls = ",".join(deployment.replica_urls())
        click.echo(f"inside the cluster, a client of every replica: ZEPHYR_TGI_URL={urls}", err=True)
