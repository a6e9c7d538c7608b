"""Kubernetes manifests (ConfigMap, Deployment or StatefulSet, Services) for TGI, vLLM or SGLang replicas of one branch.

The container's command, arguments, image, port and cache path come from the launcher's own builders
(`build_launcher_args`, `engine_command`, `ENGINE_CONTAINERS`), fed with a `LaunchConfig`, so a pod runs with
exactly the flags `TGIServer` would use on a Docker host. Secrets never enter the manifests: the launcher is given
placeholders, and whatever it would put in the environment or on the command line is rewritten into Secret
references (an environment variable from `secretKeyRef`, or Kubernetes' own `$(VAR)` expansion in arguments).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .._errors import ConfigurationError
from .._launcher.args import TOKENIZER_CONFIG_PATH, LaunchConfig, build_environment, build_launcher_args, make_config
from .._launcher.engine_args import CHAT_TEMPLATE_PATH, ENGINE_CONTAINERS
from .._launcher.variants import GPTQVariant, variant_field
from .yaml_text import dump_documents

__all__ = [
    "API_KEY_ENV",
    "ENGINES",
    "HEALTH_PATH",
    "TEMPLATE_MOUNT",
    "Engine",
    "KubernetesDeployment",
    "SecretRef",
    "Toleration",
    "deployment_from",
    "launch_config",
    "render_manifests",
    "render_yaml",
]

Engine = Literal["tgi", "vllm", "sglang"]
ENGINES: tuple[Engine, ...] = ("tgi", "vllm", "sglang")
HEALTH_PATH = "/health"  # all three engines answer 200 here once the model is loaded
# The ConfigMap is mounted as the directory where the launcher's arguments expect the packaged files (both
# files share it, as in the archive the Docker launcher copies in); each key is a file name there.
TEMPLATE_MOUNT = TOKENIZER_CONFIG_PATH.rsplit("/", 1)[0]
_TEMPLATE_FILES = {
    TOKENIZER_CONFIG_PATH.removeprefix(TEMPLATE_MOUNT + "/"): "tokenizer_config.json",
    CHAT_TEMPLATE_PATH.removeprefix(TEMPLATE_MOUNT + "/"): "zephyr_chat_template.jinja",
}
# The environment variable that carries the API key into `$(...)` expansion of SGLang's `--api-key` argument.
API_KEY_ENV = "ZEPHYR_TGI_API_KEY"
_HF_TOKEN_PLACEHOLDER = "zephyr-tgi-k8s-hf-token-placeholder"
_API_KEY_PLACEHOLDER = f"$({API_KEY_ENV})"
# vLLM's and SGLang's own flags for data parallelism inside one server (one pod, several GPUs).
_DATA_PARALLEL_FLAGS = {"vllm": "--data-parallel-size", "sglang": "--dp-size"}
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_PROBE_PERIOD_SECONDS = 10
_GPU_RESOURCE = "nvidia.com/gpu"


class SecretRef(BaseModel):
    """A key of a Kubernetes Secret, written `NAME` or `NAME:KEY` on the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")

    @classmethod
    def parse(cls, text: str, *, default_key: str) -> SecretRef:
        """Parse `NAME` or `NAME:KEY`.

        Raises:
            ConfigurationError: the name or key is not one Kubernetes accepts.
        """
        name, _, key = text.partition(":")
        try:
            return cls(name=name, key=key or default_key)
        except ValidationError as exc:
            raise ConfigurationError(
                f"invalid secret reference {text!r}: write NAME or NAME:KEY with a lower-case DNS name "
                "(letters, digits, '-', '.') and a key of letters, digits, '-', '_', '.'"
            ) from exc


class Toleration(BaseModel):
    """A pod toleration, written like a taint: `KEY[=VALUE]:EFFECT`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """Parse `KEY[=VALUE]:EFFECT` (without a value the toleration matches any value of the key).

        Raises:
            ConfigurationError: the text is not in that form.
        """
        taint, _, effect = text.rpartition(":")
        key, _, value = taint.partition("=")
        try:
            return cls(key=key, value=value or None, effect=effect)
        except ValidationError as exc:
            raise ConfigurationError(
                f"invalid toleration {text!r}: write KEY[=VALUE]:EFFECT with EFFECT one of "
                "NoSchedule, PreferNoSchedule, NoExecute (e.g. nvidia.com/gpu:NoSchedule)"
            ) from exc

    def manifest(self) -> dict[str, Any]:
        """The toleration as the pod spec has it."""
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


class KubernetesDeployment(BaseModel):
    """What to deploy: the engine, the GPTQ branch, the replicas and the cluster's knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Engine = "tgi"
    variant: GPTQVariant = GPTQVariant.MAIN
    replicas: int = Field(1, ge=0)
    # A StatefulSet gives each pod a stable DNS name (for a client that balances itself) and, with
    # cache_per_pod, a cache volume of its own that outlives restarts.
    workload: Literal["Deployment", "StatefulSet"] = "Deployment"
    cache_per_pod: str | None = Field(None, pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    name: str | None = Field(None, description="Defaults to zephyr-<engine>.")
    namespace: str | None = None
    image: str | None = Field(None, min_length=1, description="Defaults to the engine's pinned image.")
    tensor_parallel: int = Field(1, ge=1)
    data_parallel: int = Field(1, ge=1)
    max_input_tokens: int = Field(3696, ge=1)
    max_total_tokens: int = Field(4096, ge=2)
    max_batch_prefill_tokens: int = Field(4096, ge=1)
    api_key_secret: SecretRef | None = None
    hf_token_secret: SecretRef | None = SecretRef(name="hf-token", key="token")
    cache_claim: str | None = Field(None, description="A PersistentVolumeClaim for the Hugging Face cache.")
    cache_size: str = Field("30Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    shm_size: str = Field("1Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = (Toleration(key=_GPU_RESOURCE, effect="NoSchedule"),)
    startup_timeout: int = Field(1800, ge=60, description="Seconds the weights may take to download and load.")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    service_port: int = Field(80, ge=1, le=65535)
    extra_args: tuple[str, ...] = ()

    _known_variant = field_validator("variant", mode="before")(variant_field)

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        # The ConfigMap adds "-chat-template" to the name; Service names are DNS-1035 labels of 63 at most.
        if value is not None and (not _DNS_LABEL.fullmatch(value) or len(value) > 49):
            raise ValueError(
                f"{value!r} must be a lower-case DNS label of at most 49 characters (letters, digits, '-'), "
                "starting with a letter"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesDeployment:
        if self.data_parallel > 1 and self.engine == "tgi":
            raise ValueError(
                "TGI has no data parallelism inside one server: raise replicas (one pod per GPU) instead, "
                "or deploy vLLM or SGLang"
            )
        if self.cache_per_pod is not None and self.workload != "StatefulSet":
            raise ValueError(
                "a cache claim per pod needs the StatefulSet workload (its claim template makes one per pod)"
            )
        if self.cache_per_pod is not None and self.cache_claim is not None:
            raise ValueError("choose one shared cache claim or a claim per pod, not both")
        return self

    @property
    def resource_name(self) -> str:
        """The name of the Deployment and the Service (the ConfigMap adds "-chat-template")."""
        return self.name or f"zephyr-{self.engine}"

    @property
    def pods_service_name(self) -> str:
        """The headless Service that names each pod of a StatefulSet: `<name>-<ordinal>.<name>-pods`."""
        return f"{self.resource_name}-pods"

    def replica_urls(self) -> list[str]:
        """Each pod's own base URL (a StatefulSet's), for `ZephyrClient([...])` inside the cluster.

        Raises:
            ConfigurationError: the workload is a Deployment, whose pods have no stable names.
        """
        if self.workload != "StatefulSet":
            raise ConfigurationError("only a StatefulSet's pods have stable names: render the StatefulSet workload")
        suffix = f".{self.namespace}.svc" if self.namespace else ""
        port = ENGINE_CONTAINERS[self.engine].port
        return [
            f"http://{self.resource_name}-{index}.{self.pods_service_name}{suffix}:{port}"
            for index in range(self.replicas)
        ]

    @property
    def gpus_per_pod(self) -> int:
        """GPUs one replica needs: tensor parallel ranks times data parallel ranks."""
        return self.tensor_parallel * self.data_parallel


def deployment_from(
    settings: Mapping[str, Any] | KubernetesDeployment, *, field_names: Mapping[str, str] | None = None
) -> KubernetesDeployment:
    """Validate `settings`, also against the launcher's own rules, naming fields as `field_names` says.

    Raises:
        ConfigurationError: a setting is invalid or the launcher refuses the combination.
    """
    names = field_names or {}
    if isinstance(settings, KubernetesDeployment):
        deployment = settings
    else:
        try:
            deployment = KubernetesDeployment(**settings)
        except ValidationError as exc:
            problems = "; ".join(_problem(err["loc"], err["msg"], names) for err in exc.errors())
            raise ConfigurationError(f"invalid Kubernetes deployment settings: {problems}") from exc
    launch_config(deployment, field_names=names)  # the launcher's refusals, before anything is rendered
    return deployment


def _problem(location: tuple[int | str, ...], message: str, names: Mapping[str, str]) -> str:
    text = message.removeprefix("Value error, ")  # pydantic's prefix for errors raised in validators
    field = ".".join(str(part) for part in location)
    return f"{names.get(field, field)}: {text}" if field else text


def launch_config(deployment: KubernetesDeployment, *, field_names: Mapping[str, str] | None = None) -> LaunchConfig:
    """The launcher config a pod of `deployment` runs, with placeholders where the secrets go.

    Raises:
        ConfigurationError: the launcher refuses the combination (the same message `TGIServer` would give).
    """
    extra = list(deployment.extra_args)
    if deployment.data_parallel > 1:
        extra += [_DATA_PARALLEL_FLAGS[deployment.engine], str(deployment.data_parallel)]
    settings: dict[str, Any] = {
        "engine": deployment.engine,
        "variant": deployment.variant,
        "gpus": deployment.gpus_per_pod,
        "num_shard": deployment.tensor_parallel if deployment.tensor_parallel > 1 else None,
        "max_input_tokens": deployment.max_input_tokens,
        "max_total_tokens": deployment.max_total_tokens,
        "max_batch_prefill_tokens": deployment.max_batch_prefill_tokens,
        "extra_args": tuple(extra),
        "chat_template": True,
    }
    if deployment.image is not None:
        settings["image"] = deployment.image
    if deployment.api_key_secret is not None:
        settings["api_key"] = SecretStr(_API_KEY_PLACEHOLDER)
    if deployment.hf_token_secret is not None:
        settings["hf_token"] = SecretStr(_HF_TOKEN_PLACEHOLDER)
    return make_config(settings_name="invalid Kubernetes deployment settings", field_names=field_names, **settings)


def render_manifests(settings: Mapping[str, Any] | KubernetesDeployment) -> list[dict[str, Any]]:
    """The ConfigMap, the Deployment (or StatefulSet) and the Service for `settings`, plus a StatefulSet's headless
    Service; `settings` is a `KubernetesDeployment` or its fields.

    Raises:
        ConfigurationError: invalid settings, or a combination the launcher refuses.
    """
    deployment = deployment_from(settings)
    config = launch_config(deployment)
    template_map = _template_config_map(deployment)
    documents = [template_map, _workload(deployment, config, template_map), _service(deployment)]
    if deployment.workload == "StatefulSet":
        documents.append(_pods_service(deployment))
    return documents


def render_yaml(settings: Mapping[str, Any] | KubernetesDeployment) -> str:
    """`render_manifests` as one multi-document YAML file for `kubectl apply -f`."""
    return dump_documents(render_manifests(settings))


# -- the objects -------------------------------------------------------------------------------------------


def _labels(deployment: KubernetesDeployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "zephyr-tgi",
        "app.kubernetes.io/instance": deployment.resource_name,
        "app.kubernetes.io/component": deployment.engine,
    }


def _metadata(deployment: KubernetesDeployment, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": _labels(deployment)}
    if deployment.namespace is not None:
        metadata["namespace"] = deployment.namespace
    return metadata


def _template_config_map(deployment: KubernetesDeployment) -> dict[str, Any]:
    package = resources.files("zephyr_tgi").joinpath("data")
    data = {key: package.joinpath(name).read_text(encoding="utf-8") for key, name in _TEMPLATE_FILES.items()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(deployment, f"{deployment.resource_name}-chat-template"),
        "data": data,
    }


def _content_hash(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def _environment(deployment: KubernetesDeployment, config: LaunchConfig, args: list[str]) -> list[dict[str, Any]]:
    """The launcher's environment with the placeholders turned into Secret references."""
    entries: list[dict[str, Any]] = []
    if deployment.api_key_secret is not None and any(_API_KEY_PLACEHOLDER in arg for arg in args):
        # Defined first: Kubernetes expands $(ZEPHYR_TGI_API_KEY) in the arguments from the container's variables.
        entries.append(_from_secret(API_KEY_ENV, deployment.api_key_secret, optional=False))
    for name, value in sorted(build_environment(config).items()):
        if value == _API_KEY_PLACEHOLDER and deployment.api_key_secret is not None:
            entries.append(_from_secret(name, deployment.api_key_secret, optional=False))
        elif value == _HF_TOKEN_PLACEHOLDER and deployment.hf_token_secret is not None:
            # Optional: the repository is public, so a pod starts without the Secret (a token only lifts limits).
            entries.append(_from_secret(name, deployment.hf_token_secret, optional=True))
        else:
            entries.append({"name": name, "value": value})
    return entries


def _from_secret(name: str, secret: SecretRef, *, optional: bool) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key, "optional": optional}},
    }


def _probe(*, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _workload(deployment: KubernetesDeployment, config: LaunchConfig, template_map: dict[str, Any]) -> dict[str, Any]:
    container_spec = ENGINE_CONTAINERS[config.engine]
    args = build_launcher_args(config)
    container: dict[str, Any] = {"name": config.engine, "image": config.image}
    if container_spec.entrypoint is not None:
        container["command"] = list(container_spec.entrypoint)
    container |= {
        "args": args,
        "env": _environment(deployment, config, args),
        "ports": [{"name": "http", "containerPort": container_spec.port, "protocol": "TCP"}],
        "resources": {"limits": {_GPU_RESOURCE: deployment.gpus_per_pod}},
        # Until the first 200 the other probes wait; the download of the branch happens in this window.
        "startupProbe": _probe(
            period=_PROBE_PERIOD_SECONDS,
            timeout=5,
            failures=math.ceil(deployment.startup_timeout / _PROBE_PERIOD_SECONDS),
        ),
        # Out of the Service's endpoints after 15 s of failed checks, back in after one success.
        "readinessProbe": _probe(period=5, timeout=5, failures=3),
        # TGI's /health runs a one-token check on the shards when it has been idle: give a busy GPU time.
        "livenessProbe": _probe(period=15, timeout=10, failures=4),
        "volumeMounts": [
            {"name": "chat-template", "mountPath": TEMPLATE_MOUNT, "readOnly": True},
            {"name": "hf-cache", "mountPath": container_spec.cache_mount},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "chat-template", "configMap": {"name": template_map["metadata"]["name"]}},
        # The engines share tensors between processes through /dev/shm (Docker: shm_size or ipc=host).
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": deployment.shm_size}},
    ]
    if deployment.cache_claim is not None:
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": deployment.cache_claim}})
    elif deployment.cache_per_pod is None:  # else the StatefulSet's claim template provides hf-cache
        volumes.append({"name": "hf-cache", "emptyDir": {"sizeLimit": deployment.cache_size}})
    pod_spec: dict[str, Any] = {
        # Kubernetes' service links put <SERVICE>_PORT=tcp://... in every container; vLLM reads VLLM_PORT and
        # fails on it when a Service is called `vllm`, so none are injected.
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": volumes,
    }
    if deployment.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(deployment.node_selector.items()))
    if deployment.tolerations:
        pod_spec["tolerations"] = [toleration.manifest() for toleration in deployment.tolerations]
    labels = _labels(deployment)
    template = {
        "metadata": {
            "labels": {**labels, "zephyr-tgi/variant": config.variant.value},
            # A new template or new flags roll the pods (a ConfigMap change alone would not).
            "annotations": {
                "zephyr-tgi/chat-template-hash": _content_hash(template_map["data"]),
                "zephyr-tgi/args-hash": _content_hash(args),
            },
        },
        "spec": pod_spec,
    }
    spec: dict[str, Any] = {"replicas": deployment.replicas, "selector": {"matchLabels": labels}}
    if deployment.workload == "Deployment":
        # A GPU cluster rarely has a spare GPU for a surge pod: replace one replica at a time instead.
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        spec["template"] = template
    else:
        spec["serviceName"] = deployment.pods_service_name
        # All pods download and load at once instead of one after the other.
        spec["podManagementPolicy"] = "Parallel"
        spec["updateStrategy"] = {"type": "RollingUpdate"}
        spec["template"] = template
        if deployment.cache_per_pod is not None:
            spec["volumeClaimTemplates"] = [
                {
                    "metadata": {"name": "hf-cache", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": deployment.cache_per_pod}},
                    },
                }
            ]
    return {
        "apiVersion": "apps/v1",
        "kind": deployment.workload,
        "metadata": _metadata(deployment, deployment.resource_name),
        "spec": spec,
    }


def _service(deployment: KubernetesDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(deployment, deployment.resource_name),
        "spec": {
            "type": deployment.service_type,
            "selector": _labels(deployment),
            "ports": [{"name": "http", "port": deployment.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _pods_service(deployment: KubernetesDeployment) -> dict[str, Any]:
    # Headless: DNS answers with each ready pod's own address, `<name>-<ordinal>.<name>-pods`.
    port = ENGINE_CONTAINERS[deployment.engine].port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(deployment, deployment.pods_service_name),
        "spec": {
            "clusterIP": "None",
            "selector": _labels(deployment),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
