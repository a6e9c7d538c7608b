"""Pure building blocks of the launcher: the config model, TGI's arguments, docker's kwargs, labels, hash.

Nothing here talks to Docker or reads the process environment by itself; `environment_defaults` is handed a
mapping. `TGIServer` feeds these functions and passes their results to the docker SDK.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import socket
import tarfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .._errors import ConfigurationError
from .variants import GPTQVariant, variant_field

__all__ = [
    "CONTAINER_PORT",
    "DEFAULT_IMAGE",
    "DEFAULT_MODEL_ID",
    "LABEL_API_KEY",
    "LABEL_CONFIG_HASH",
    "LABEL_CREATOR",
    "LABEL_MODEL_ID",
    "LABEL_PACKAGE",
    "LABEL_VARIANT",
    "LABEL_VERSION",
    "PACKAGE_LABEL_VALUE",
    "TOKENIZER_CONFIG_PATH",
    "GPUSpec",
    "LaunchConfig",
    "build_environment",
    "build_launcher_args",
    "config_hash",
    "container_create_kwargs",
    "current_creator",
    "device_requests",
    "environment_defaults",
    "is_local_daemon",
    "labels",
    "make_config",
    "parse_gpus",
    "published_address",
    "tokenizer_config_archive",
    "url_host",
]

DEFAULT_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
DEFAULT_MODEL_ID = "TheBloke/zephyr-7B-alpha-GPTQ"
CONTAINER_PORT = 80  # the TGI image (and the emulator image) set ENV PORT=80
# Where the packaged tokenizer config lands in the container (copied in with put_archive before start).
TOKENIZER_CONFIG_PATH = "/zephyr_tgi/tokenizer_config.json"

LABEL_PACKAGE = "zephyr_tgi.package"
PACKAGE_LABEL_VALUE = "zephyr-tgi"
LABEL_VERSION = "zephyr_tgi.version"
LABEL_VARIANT = "zephyr_tgi.variant"
LABEL_MODEL_ID = "zephyr_tgi.model_id"
LABEL_CONFIG_HASH = "zephyr_tgi.config_hash"
LABEL_API_KEY = "zephyr_tgi.api_key"  # "set" or "none": never the key itself
# "host:pid" of the process that created the container: lets a test session find its own containers even
# when other sessions share the daemon.
LABEL_CREATOR = "zephyr_tgi.creator"

GPUSpec = Literal["all"] | int | tuple[str, ...] | None

# Flags the launcher sets from named parameters; repeating them in extra_args would make clap refuse to
# start ("cannot be used multiple times") or silently fight the parameter, so they are rejected up front.
_MANAGED_FLAGS: dict[str, str] = {
    "--model-id": "model_id",
    "--revision": "variant",
    "--quantize": "(always gptq)",
    "--max-input-tokens": "max_input_tokens",
    "--max-input-length": "max_input_tokens",
    "--max-total-tokens": "max_total_tokens",
    "--max-batch-prefill-tokens": "max_batch_prefill_tokens",
    "--usage-stats": "usage_stats",
    "--tokenizer-config-path": "chat_template",
    "--num-shard": "num_shard",
    "--enable-prefill-logprobs": "enable_prefill_logprobs",
    "--api-key": "api_key",
    "--port": "port (the container port is fixed; choose the host port with port=)",
    "-p": "port (the container port is fixed; choose the host port with port=)",
    "--hostname": "host (publish on another host address with host=)",
}
# Secrets have their own parameters so that they stay out of reprs, labels and the config hash.
_SECRET_ENV = {"HF_TOKEN": "hf_token", "HUGGING_FACE_HUB_TOKEN": "hf_token", "API_KEY": "api_key"}


class LaunchConfig(BaseModel):
    """Everything that decides what container runs; frozen, with secrets kept out of repr and hash.

    Attributes:
        engine: "tgi", "vllm" or "sglang".
        variant: The GPTQ branch.
        model_id: The Hugging Face repo.
        image: The container image.
        gpus: "all", a count, device ids, or None for no GPU.
        num_shard: Shards for tensor parallelism.
        host: The address the port is published on.
        port: The host port (None: docker picks one).
        api_key: The server's api key.
        hf_token: The Hugging Face token for downloads.
        cache_dir: The Hugging Face cache mounted at /data.
        max_input_tokens: The longest prompt, in tokens.
        max_total_tokens: Prompt + new tokens at most, per request.
        max_batch_prefill_tokens: Prompt tokens prefilled in one batch at most.
        usage_stats: TGI's `--usage-stats`.
        enable_prefill_logprobs: TGI's `--enable-prefill-logprobs`.
        chat_template: Whether the whitespace-safe Zephyr chat template is copied in.
        shm_size: The container's shared memory.
        extra_args: More launcher flags.
        env: More environment variables.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["tgi", "vllm", "sglang"] = "tgi"
    variant: GPTQVariant = GPTQVariant.MAIN
    model_id: str = Field(DEFAULT_MODEL_ID, min_length=1)
    image: str = Field(DEFAULT_IMAGE, min_length=1)
    gpus: GPUSpec = "all"
    num_shard: int | None = Field(None, ge=1)
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    api_key: SecretStr | None = None
    hf_token: SecretStr | None = None
    cache_dir: str | None = None
    max_input_tokens: int = Field(3696, ge=1)
    max_total_tokens: int = Field(4096, ge=2)
    max_batch_prefill_tokens: int = Field(4096, ge=1)
    usage_stats: Literal["on", "off", "no-stack"] = "off"
    enable_prefill_logprobs: bool = False
    chat_template: bool = True
    shm_size: str = Field("1g", pattern=r"^[0-9]+[bkmgBKMG]?$")
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _engine_image(cls, data: Any) -> Any:
        # Each engine's pinned image unless one is given.
        if isinstance(data, dict) and data.get("engine") in ("vllm", "sglang") and not data.get("image"):
            from .engine_args import ENGINE_CONTAINERS

            data = {**data, "image": ENGINE_CONTAINERS[data["engine"]].image}
        return data

    _known_variant = field_validator("variant", mode="before")(variant_field)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus_shape(cls, value: object) -> object:
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, bool):  # bool is an int: gpus=True must not mean "one GPU"
            raise ValueError("gpus must be 'all', a GPU count, a list of device ids, or None")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_ip(cls, value: str) -> str:
        if value == "localhost":
            return "127.0.0.1"
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"host must be an IP address to publish on (e.g. 127.0.0.1), got {value!r}") from None
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_managed_flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in _MANAGED_FLAGS:
                raise ValueError(f"extra_args must not contain {flag}: use the parameter {_MANAGED_FLAGS[flag]}")
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets_in_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in _SECRET_ENV:
                raise ValueError(f"env must not contain {name}: pass {_SECRET_ENV[name]}= instead")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LaunchConfig:
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError(
                f"max_input_tokens ({self.max_input_tokens}) must be < max_total_tokens ({self.max_total_tokens}); "
                "TGI refuses to start otherwise"
            )
        if self.max_batch_prefill_tokens < self.max_input_tokens:
            raise ValueError(
                f"max_batch_prefill_tokens ({self.max_batch_prefill_tokens}) must be >= max_input_tokens "
                f"({self.max_input_tokens}); TGI refuses to start otherwise"
            )
        if isinstance(self.gpus, int) and self.gpus < 1:
            raise ValueError("gpus must be >= 1 when it is a count (use None for no GPU)")
        if isinstance(self.gpus, tuple) and (not self.gpus or not all(self.gpus)):
            raise ValueError("gpus as a list needs at least one non-empty device id")
        if self.num_shard is not None:
            available = _gpu_count(self.gpus)
            if available is not None and self.num_shard > available:
                raise ValueError(f"num_shard={self.num_shard} needs as many GPUs, but gpus={self.gpus!r}")
        return self

    @property
    def is_loopback(self) -> bool:
        """Whether the published port is reachable from this machine only."""
        return ipaddress.ip_address(self.host).is_loopback


def _gpu_count(gpus: GPUSpec) -> int | None:
    if isinstance(gpus, int):
        return gpus
    if isinstance(gpus, tuple):
        return len(gpus)
    return None  # "all" (unknown here) or None


def make_config(
    *, settings_name: str = "invalid TGIServer settings", field_names: Mapping[str, str] | None = None, **kwargs: Any
) -> LaunchConfig:
    """Build a `LaunchConfig`, turning pydantic's validation errors into `ConfigurationError`.

    `settings_name` opens the message and `field_names` renames fields in it (the command line's flags).
    """
    names = field_names or {}
    try:
        return LaunchConfig(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{names.get(field, field)}: {_strip_prefix(err['msg'])}"
            for err in exc.errors()
            for field in [".".join(str(p) for p in err["loc"]) or "config"]
        )
        raise ConfigurationError(f"{settings_name}: {problems}") from exc


def _strip_prefix(message: str) -> str:
    # pydantic prefixes errors raised in validators with "Value error, ".
    return message.removeprefix("Value error, ")


def parse_gpus(text: str) -> GPUSpec:
    """Parse a GPU setting as written on a command line or in an environment variable."""
    value = text.strip()
    if value.lower() in ("", "none", "no", "0", "false", "cpu"):
        return None
    if value.lower() == "all":
        return "all"
    if value.isdigit():
        return int(value)
    return tuple(part.strip() for part in value.split(",") if part.strip())


def environment_defaults(environ: Mapping[str, str], *, home: Path | None = None) -> dict[str, Any]:
    """Launcher defaults found in an environment mapping (the caller decides which ones to use).

    Keys: `hf_token` (HF_TOKEN, then the legacy HUGGING_FACE_HUB_TOKEN), `cache_dir` (HF_HOME, else
    ~/.cache/huggingface), and, from ZEPHYR_TGI_* variables, `variant`, `image`, `gpus`, `api_key`.
    """
    defaults: dict[str, Any] = {}
    token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        defaults["hf_token"] = token
    hf_home = environ.get("HF_HOME")
    defaults["cache_dir"] = hf_home or str((home or Path.home()) / ".cache" / "huggingface")
    for name, key in (("ZEPHYR_TGI_VARIANT", "variant"), ("ZEPHYR_TGI_IMAGE", "image")):
        if environ.get(name):
            defaults[key] = environ[name]
    if environ.get("ZEPHYR_TGI_GPUS") is not None:
        defaults["gpus"] = parse_gpus(environ["ZEPHYR_TGI_GPUS"])
    if environ.get("ZEPHYR_TGI_API_KEY"):
        defaults["api_key"] = environ["ZEPHYR_TGI_API_KEY"]
    return defaults


def build_launcher_args(config: LaunchConfig) -> list[str]:
    """The container command: TGI launcher flags (secrets go through the environment, never here), or the
    command of the engine the config names."""
    if config.engine != "tgi":
        from .engine_args import engine_command

        return engine_command(config)
    args = [
        "--model-id", config.model_id,
        "--revision", config.variant.value,
        "--quantize", "gptq",
        "--max-input-tokens", str(config.max_input_tokens),
        "--max-total-tokens", str(config.max_total_tokens),
        "--max-batch-prefill-tokens", str(config.max_batch_prefill_tokens),
        "--usage-stats", config.usage_stats,
    ]  # fmt: skip
    if config.chat_template:
        args += ["--tokenizer-config-path", TOKENIZER_CONFIG_PATH]
    if config.num_shard is not None:
        args += ["--num-shard", str(config.num_shard)]
    if config.enable_prefill_logprobs:
        args.append("--enable-prefill-logprobs")
    args += config.extra_args
    return args


def build_environment(config: LaunchConfig) -> dict[str, str]:
    """The container environment: the user's variables, plus HF_TOKEN and API_KEY only when set."""
    if config.engine != "tgi":
        from .engine_args import engine_environment

        return engine_environment(config)
    environment = dict(config.env)
    if config.hf_token is not None and config.hf_token.get_secret_value():
        environment["HF_TOKEN"] = config.hf_token.get_secret_value()
    if config.api_key is not None and config.api_key.get_secret_value():
        # TGI reads API_KEY (clap env): unlike --api-key it does not show in the process list or in
        # `docker inspect`'s Args.
        environment["API_KEY"] = config.api_key.get_secret_value()
    return environment


def device_requests(gpus: GPUSpec) -> list[dict[str, Any]]:
    """Docker device requests for `gpus` ("all" / a count / device ids / None), like `docker run --gpus`."""
    if gpus is None:
        return []
    request: dict[str, Any] = {"driver": "", "capabilities": [["gpu"]]}
    if gpus == "all":
        request["count"] = -1
    elif isinstance(gpus, int):
        request["count"] = gpus
    else:
        request["device_ids"] = list(gpus)
    return [request]


def config_hash(config: LaunchConfig) -> str:
    """A short, stable digest of what the container runs; secrets are left out (only their presence counts)."""
    data = config.model_dump(mode="json", exclude={"api_key", "hf_token"})
    # The key's value must not be derivable from a label, but a server with a key is a different server.
    data["api_key_set"] = config.api_key is not None and bool(config.api_key.get_secret_value())
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def labels(
    config: LaunchConfig, *, version: str, creator: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Docker labels that identify our containers (package, variant, config hash) without any secret.

    `extra` adds more (the owner labels of `ownership.owner_labels`).
    """
    has_key = config.api_key is not None and bool(config.api_key.get_secret_value())
    found = {
        LABEL_PACKAGE: PACKAGE_LABEL_VALUE,
        LABEL_VERSION: version,
        LABEL_VARIANT: config.variant.value,
        LABEL_MODEL_ID: config.model_id,
        LABEL_CONFIG_HASH: config_hash(config),
        LABEL_API_KEY: "set" if has_key else "none",
    }
    if creator is not None:
        found[LABEL_CREATOR] = creator
    found.update(extra or {})
    return found


def current_creator() -> str:
    """The `zephyr_tgi.creator` label value of this process: "hostname:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def container_create_kwargs(
    config: LaunchConfig,
    *,
    version: str,
    name: str | None,
    creator: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `docker.containers.create` (the environment holds secrets: never log this)."""
    from .engine_args import ENGINE_CONTAINERS

    container = ENGINE_CONTAINERS[config.engine]
    kwargs: dict[str, Any] = {
        "image": config.image,
        "command": build_launcher_args(config),
        "environment": build_environment(config),
        "labels": labels(config, version=version, creator=creator, extra=extra_labels),
        # The host port is None for an ephemeral one chosen by docker and read back after start.
        "ports": {f"{container.port}/tcp": (config.host, config.port)},
        "shm_size": config.shm_size,
        # docker-init as PID 1 forwards SIGTERM, so `stop()` is quick even for an entrypoint without handlers.
        "init": True,
    }
    if name is not None:
        kwargs["name"] = name
    requests = device_requests(config.gpus)
    if requests:
        kwargs["device_requests"] = requests
    if container.entrypoint is not None:
        kwargs["entrypoint"] = list(container.entrypoint)
    if config.engine != "tgi":
        kwargs["ipc_mode"] = "host"  # both engines' workers share tensors through /dev/shm
    if config.cache_dir:
        kwargs["volumes"] = {config.cache_dir: {"bind": container.cache_mount, "mode": "rw"}}
    return kwargs


def published_address(attrs: Mapping[str, Any], container_port: int = CONTAINER_PORT) -> tuple[str, int] | None:
    """The (host ip, host port) docker published for `container_port`, from `container.attrs`; None if none."""
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    bindings: Sequence[Mapping[str, str]] = ports.get(f"{container_port}/tcp") or []
    # Docker may list an IPv4 and an IPv6 binding for the same port; prefer IPv4, the usual loopback.
    ordered = sorted(bindings, key=lambda b: ":" in (b.get("HostIp") or ""))
    for binding in ordered:
        port = binding.get("HostPort")
        if port and port.isdigit():
            return binding.get("HostIp") or "", int(port)
    return None


def url_host(bound_ip: str, *, docker_base_url: str | None) -> str:
    """The host name a client should use to reach a port docker published on `bound_ip`.

    A port published on every interface of a remote daemon's machine is reached through that machine's
    name; otherwise the bound address itself (or loopback for the wildcard) is right.
    """
    remote = _remote_docker_host(docker_base_url)
    try:
        address = ipaddress.ip_address(bound_ip) if bound_ip else None
    except ValueError:
        return bound_ip
    if address is None or address.is_unspecified:
        return remote or "127.0.0.1"
    return f"[{bound_ip}]" if address.version == 6 else bound_ip


def _remote_docker_host(docker_base_url: str | None) -> str | None:
    """The remote daemon's host name; "" for a remote one reached over ssh; None for a local daemon."""
    if not docker_base_url:
        return None
    parts = urlsplit(docker_base_url)
    # docker-py rewrites unix sockets to http+docker://localhost, named pipes to ...//localnpipe and
    # ssh:// hosts to ...//ssh (the real host name stays inside its adapter).
    if parts.scheme == "http+docker":
        return "" if parts.hostname == "ssh" else None
    if parts.scheme in ("tcp", "http", "https", "ssh") and parts.hostname:
        return parts.hostname
    return None


def is_local_daemon(docker_base_url: str | None) -> bool:
    """Whether the daemon shares this machine's file system (unix socket or named pipe)."""
    return _remote_docker_host(docker_base_url) is None


def tokenizer_config_archive() -> bytes:
    """A tar archive holding the packaged tokenizer config at TOKENIZER_CONFIG_PATH, for `put_archive("/")`.

    Copying the file into the created container (instead of a bind mount) works with a remote daemon too.
    """
    data = resources.files("zephyr_tgi").joinpath("data", "tokenizer_config.json").read_bytes()
    # vLLM's and SGLang's --chat-template read the same whitespace-safe template as a file of its own.
    template = resources.files("zephyr_tgi").joinpath("data", "zephyr_chat_template.jinja").read_bytes()
    directory, filename = TOKENIZER_CONFIG_PATH.strip("/").rsplit("/", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo(directory)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        archive.addfile(folder)
        for name, content in ((filename, data), ("zephyr_chat_template.jinja", template)):
            entry = tarfile.TarInfo(f"{directory}/{name}")
            entry.size = len(content)
            entry.mode = 0o444  # read-only, like a `:ro` mount
            archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()
