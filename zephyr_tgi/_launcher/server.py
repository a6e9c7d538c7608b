"""TGIServer: start (or reuse) a TGI container serving Zephyr-7B-alpha GPTQ, wait until ready, clean up.

The decisions live in `_launch_args` (what to run) and `_readiness` (when it is ready, what went wrong);
this module is the docker shell around them. `_translate_docker_error` is the one place that knows the
exception types of the docker SDK and requests.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import SecretStr

from .._errors import (
    ConfigurationError,
    ContainerStartError,
    DockerUnavailableError,
    GPUUnavailableError,
    ServerError,
    ServerNotReadyError,
    ZephyrTGIError,
)
from .args import (
    DEFAULT_IMAGE,
    DEFAULT_MODEL_ID,
    LABEL_CONFIG_HASH,
    LABEL_PACKAGE,
    PACKAGE_LABEL_VALUE,
    GPUSpec,
    LaunchConfig,
    config_hash,
    container_create_kwargs,
    current_creator,
    environment_defaults,
    is_local_daemon,
    make_config,
    parse_gpus,
    published_address,
    tokenizer_config_archive,
    url_host,
)
from .engine_args import ENGINE_CONTAINERS
from .ownership import Owner, describe_containers, find_containers, owner_labels
from .readiness import (
    LOG_TAIL_LINES,
    LineSplitter,
    ProbeOutcome,
    ProgressCallback,
    ProgressEvent,
    PullProgress,
    Stage,
    WaitOutcome,
    failure_hints,
    parse_stage,
    print_progress,
    probe,
    redact,
    tail,
    wait_for_ready,
)
from .reaper import Reaper
from .variants import GPTQVariant, VariantInfo, get_variant
from .wording import PYTHON, Audience, Wording, wording_for

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from .. import AsyncZephyrClient, ZephyrClient

__all__ = ["TGIServer"]

PullPolicy = Literal["missing", "always", "never"]
_INSTALL_HINT = "pip install 'zephyr-tgi[docker]'"
_STOP_TIMEOUT = 10  # seconds docker waits after SIGTERM before SIGKILL


class TGIServer:
    """A TGI container serving TheBloke/zephyr-7B-alpha-GPTQ on the GPU, as a context manager.

    ```python
    with TGIServer("gptq-4bit-32g-actorder_True") as server:
        print(server.client().chat("Hi").text)
    ```

    Defaults that come from the environment are read once, here, at construction: `hf_token` from
    HF_TOKEN (pass `hf_token=""` to send none) and `cache_dir` from HF_HOME (else ~/.cache/huggingface).
    `TGIServer.from_env()` also reads ZEPHYR_TGI_VARIANT, ZEPHYR_TGI_IMAGE, ZEPHYR_TGI_GPUS, ZEPHYR_TGI_API_KEY.

    Args:
        variant: a GPTQ branch name or `GPTQVariant` (see `zephyr_tgi.VARIANTS`); unknown names are refused.
        engine: "tgi" (default), "vllm" or "sglang": which server runs the model, in its pinned image
            (`image=` overrides it); the lifecycle (readiness, hints, cleanup, reuse, ownership) is the same.
        model_id: the Hugging Face repo the server loads (default TheBloke/zephyr-7B-alpha-GPTQ).
        image: the container image; default the engine's pinned image.
        gpus: "all", a GPU count, device ids (list or "0,1"), or None for no GPU (e.g. the emulator image).
        num_shard: shards for tensor parallelism over several GPUs (TGI's `--num-shard`).
        host: the address the port is published on; loopback by default because TGI has no auth by default.
        port: the host port; None lets docker pick a free one (read back after start).
        api_key: TGI's `--api-key` (sent as API_KEY); `client()` uses it.
        hf_token: the Hugging Face token for downloads (sent as HF_TOKEN); default HF_TOKEN from the
            environment, "" for none.
        cache_dir: the Hugging Face cache mounted at /data: a host path, or a docker volume name.
        max_input_tokens: the longest prompt the server accepts (TGI's `--max-input-tokens`).
        max_total_tokens: prompt + answer at most, per request (TGI's `--max-total-tokens`).
        max_batch_prefill_tokens: prompt tokens prefilled in one batch at most (TGI's `--max-batch-prefill-tokens`).
        usage_stats: TGI's `--usage-stats`: "off" (default) sends Hugging Face no telemetry.
        enable_prefill_logprobs: TGI's `--enable-prefill-logprobs`, which `perplexity()` needs.
        chat_template: copy the whitespace-safe Zephyr chat template into the container and pass
            `--tokenizer-config-path`, so that `/v1/chat/completions` works with TheBloke's repo.
        shm_size: the container's shared memory (NCCL needs it with several shards), e.g. "1g".
        extra_args: more TGI launcher flags (flags that have a parameter here are refused).
        env: more environment variables for the container (API_KEY and HF_TOKEN go through `api_key=` and
            `hf_token=`).
        name: the container's name; default one docker picks.
        reuse: attach to a running container with the same config (labels) instead of starting another.
            It never takes ownership: the container stays its owner's (or, if kept, stays up). Orphans are
            removed before looking, so `reuse=True` never attaches to one (it starts a fresh container).
        keep: leave the container running when the `with` block ends (for a later `reuse=True`); the
            container is labelled as kept, so neither the reaper nor the orphan sweep removes it after a
            successful start (`zephyr-tgi down NAME` does).
        pull: "missing" (default), "always" or "never".
        startup_timeout: seconds for the container to become ready, not counting the image pull.
        progress: True prints stages on stderr, False is silent, or a callable receiving `ProgressEvent`s.
        docker_client: a `docker.DockerClient` (or a factory of one); default `docker.from_env()` at start.
        check_gpu_runtime: refuse to start when GPUs are requested and `docker info` lists no NVIDIA runtime.
        messages_for: "python" (default) names these arguments in error messages; "cli" names the flags of
            `zephyr-tgi serve` instead.

    Ownership: the container is labelled with this process (host, pid, start time) and when it was created.
    A reaper process watches this process and removes the container within seconds after it exits by any
    path, SIGKILL included; `start()` also removes this host's orphans left by owners that are gone.
    """

    def __init__(
        self,
        variant: str | GPTQVariant = GPTQVariant.MAIN,
        *,
        engine: Literal["tgi", "vllm", "sglang"] = "tgi",
        model_id: str = DEFAULT_MODEL_ID,
        image: str | None = None,
        gpus: Literal["all"] | int | Sequence[str] | None = "all",
        num_shard: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        api_key: str | SecretStr | None = None,
        hf_token: str | SecretStr | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_input_tokens: int = 3696,
        max_total_tokens: int = 4096,
        max_batch_prefill_tokens: int = 4096,
        usage_stats: Literal["on", "off", "no-stack"] = "off",
        enable_prefill_logprobs: bool = False,
        chat_template: bool = True,
        shm_size: str = "1g",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        reuse: bool = False,
        keep: bool = False,
        pull: PullPolicy = "missing",
        startup_timeout: float = 1800.0,
        progress: bool | ProgressCallback = True,
        docker_client: DockerClient | Callable[[], DockerClient] | None = None,
        check_gpu_runtime: bool = True,
        messages_for: Audience = "python",
    ) -> None:
        self._wording: Wording = wording_for(messages_for)
        from_environment = environment_defaults(os.environ)
        if hf_token is None:
            hf_token = from_environment.get("hf_token")
        self._config: LaunchConfig = make_config(
            settings_name=self._wording.settings,
            field_names=self._wording.field_names,
            engine=engine,
            variant=variant,
            model_id=model_id,
            image=image or (DEFAULT_IMAGE if engine == "tgi" else None),
            gpus=_normalise_gpus(gpus),
            num_shard=num_shard,
            host=host,
            port=port,
            api_key=api_key or None,
            hf_token=hf_token or None,
            cache_dir=_normalise_cache_dir(cache_dir) if cache_dir is not None else from_environment["cache_dir"],
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            max_batch_prefill_tokens=max_batch_prefill_tokens,
            usage_stats=usage_stats,
            enable_prefill_logprobs=enable_prefill_logprobs,
            chat_template=chat_template,
            shm_size=shm_size,
            extra_args=tuple(extra_args),
            env=dict(env or {}),
        )
        if startup_timeout <= 0:
            raise ConfigurationError(f"{self._wording.startup_timeout} must be > 0 seconds, got {startup_timeout}")
        if pull not in ("missing", "always", "never"):
            raise ConfigurationError(f"pull must be 'missing', 'always' or 'never', got {pull!r}")
        if not self._config.is_loopback and self._config.api_key is None:
            exposed = self._wording.exposed.format(host=self._config.host)
            warnings.warn(
                f"{exposed}: anyone who can reach this address can use the model. {self._wording.exposure_advice}.",
                UserWarning,
                stacklevel=2,
            )
        self._name = name if name is not None else (f"zephyr-tgi-{config_hash(self._config)}" if reuse else None)
        self._reuse = reuse
        self._keep = keep
        self._pull: PullPolicy = pull
        self._startup_timeout = float(startup_timeout)
        self._progress: ProgressCallback = (
            progress if callable(progress) else (print_progress if progress else _no_progress)
        )
        self._docker_source = docker_client
        self._check_gpu_runtime = check_gpu_runtime
        self._docker: DockerClient | None = None
        self._container: Container | None = None
        self._owned = False
        self._ready = False
        self._url: str | None = None
        self._log_lines_seen = 0
        self._reaper: Reaper | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Like the constructor, with defaults also read from ZEPHYR_TGI_* variables; arguments win.

        Args:
            **overrides: The constructor's arguments, by name.

        Returns:
            A server handle, not started yet.

        Raises:
            ConfigurationError: an invalid setting, from the arguments or the environment.
        """
        defaults = environment_defaults(os.environ)
        chosen: dict[str, Any] = {k: defaults[k] for k in ("variant", "image", "gpus", "api_key") if k in defaults}
        return cls(**(chosen | overrides))

    # -- what runs --------------------------------------------------------------------------------------

    @property
    def config(self) -> LaunchConfig:
        """The validated launch configuration (secrets are `SecretStr`)."""
        return self._config

    @property
    def variant(self) -> VariantInfo:
        """The GPTQ branch served, with its bits, group size, size and VRAM estimate."""
        return get_variant(self._config.variant)

    @property
    def config_hash(self) -> str:
        """The digest that `reuse=True` matches on (also the container label `zephyr_tgi.config_hash`)."""
        return config_hash(self._config)

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. `http://127.0.0.1:32768` (after `start()`)."""
        if self._url is None:
            raise ServerError("the server is not started: call start() or use `with TGIServer(...) as server`")
        return self._url

    @property
    def port(self) -> int:
        """The host port docker published TGI on."""
        port = self.url.rsplit(":", 1)[1]
        return int(port)

    @property
    def container_id(self) -> str | None:
        """The docker container id, or None before `start()` / after `stop()`."""
        return self._container.id if self._container is not None else None

    @property
    def is_ready(self) -> bool:
        """Whether the last readiness wait succeeded and the server was not stopped since."""
        return self._ready and self._container is not None

    @property
    def owns_container(self) -> bool:
        """True if this handle started the container (False when `reuse=True` attached to another's)."""
        return self._owned

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start (or with `reuse=True` attach to) the container and wait until it serves; idempotent.

        Raises:
            DockerUnavailableError: no docker SDK, or the daemon cannot be reached.
            GPUUnavailableError: GPUs were requested but Docker has no NVIDIA runtime.
            ContainerStartError: the image is unavailable or the container exited while starting.
            ServerNotReadyError: not ready within `startup_timeout`.
        """
        if self._container is not None:
            return self
        client = self._connect()
        try:
            self._preflight(client)
            self._remove_orphans(client)
            if not (self._reuse and self._attach(client)):
                self._ensure_image(client)
                self._create_and_start(client)
            self.wait_until_ready(self._startup_timeout)
        except BaseException as exc:  # Ctrl-C included: never leave a half-started container behind
            self._discard_after_failure(exc)
            raise
        if self._keep:  # ready: from now on it is meant to outlive this process
            self._release_reaper()
        return self

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until `/health` is 200 and a one-token generate works; watch the container meanwhile.

        Args:
            timeout: Seconds to wait at most; default `startup_timeout`.

        Raises:
            ContainerStartError: the container exited (with its exit code, log tail and a hint).
            ServerNotReadyError: still not ready after `timeout` seconds.
            ConfigurationError: the container answers 401 to this handle's api key.
        """
        container = self._require_container()
        limit = self._startup_timeout if timeout is None else timeout
        api_key = self._api_key_value()

        def check_probe(probe_timeout: float) -> ProbeOutcome:
            url = self._url or self._resolve_url(container)  # the port shows up once the container runs
            if not url:
                return ProbeOutcome.NOT_LISTENING
            return probe(url, api_key=api_key, timeout=probe_timeout, engine=self._config.engine)

        outcome = wait_for_ready(
            check_probe=check_probe,
            container_exited=lambda: self._has_exited(container),
            pump_logs=lambda: self._pump_logs(container),
            timeout=limit,
        )
        if outcome is WaitOutcome.READY:
            self._ready = True
            self._progress(ProgressEvent(Stage.READY, f"{self._config.model_id}@{self._config.variant} at {self.url}"))
            return
        if outcome is WaitOutcome.EXITED:
            raise self._start_failure(container)
        if outcome is WaitOutcome.UNAUTHORIZED:
            raise ConfigurationError(
                f"the TGI container {container.short_id} answers 401 to our api key: it was started with "
                f"another --api-key; {self._wording.same_api_key}, or stop that container"
            )
        logs = self._log_tail(container)
        raise ServerNotReadyError(
            f"TGI was not ready after {limit:.0f}s (container {container.short_id} still running; "
            f"{self._wording.longer_startup} if it is still downloading or loading). "
            f"Last {LOG_TAIL_LINES} log lines:\n{logs}",
            logs=logs,
        )

    def stop(self, *, force: bool = False) -> None:
        """Stop and remove the container if this handle started it (or if `force`); otherwise just detach.

        Args:
            force: Remove the container even when this handle did not start it (it attached with `reuse=True`).
        """
        container, self._container = self._container, None
        owned, self._owned = self._owned, False
        self._url, self._ready = None, False
        if container is not None and (owned or force):
            with _docker_errors("stop the container", missing_ok=True):
                container.stop(timeout=_STOP_TIMEOUT)
            with _docker_errors("remove the container", missing_ok=True):
                container.remove(force=True, v=True)
        self._release_reaper()
        self._release_docker()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._keep:  # detach and leave it running for a later reuse=True
            self._container, self._url, self._ready, self._owned = None, None, False, False
            self._release_reaper()
            self._release_docker()
        else:
            self.stop()

    # -- using it ---------------------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> ZephyrClient:
        """A `ZephyrClient` for this server, with its api key and engine.

        Args:
            **kwargs: More `ZephyrClient` arguments (`timeout=`, `retry=`, ...); they win over the server's.

        Returns:
            A new client; close it (or use it in a `with` block) when done.
        """
        from .. import ZephyrClient

        kwargs.setdefault("api_key", self._api_key_value())
        kwargs.setdefault("engine", self._config.engine)
        return ZephyrClient(self.url, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncZephyrClient:
        """An `AsyncZephyrClient` for this server, with its api key and engine.

        Args:
            **kwargs: More `AsyncZephyrClient` arguments (`timeout=`, `retry=`, ...); they win over the server's.

        Returns:
            A new client; close it (or use it in an `async with` block) when done.
        """
        from .. import AsyncZephyrClient

        kwargs.setdefault("api_key", self._api_key_value())
        kwargs.setdefault("engine", self._config.engine)
        return AsyncZephyrClient(self.url, **kwargs)

    def logs(self, *, follow: bool = False, tail: int | None = None) -> Generator[str, None, None]:
        """The container's log lines (secrets redacted); with `follow=True`, keep streaming until it stops.

        Close the generator (`.close()`) to stop following early; the docker stream is closed with it.

        Args:
            follow: Keep yielding new lines until the container stops.
            tail: Only the last `tail` lines written so far; default all.

        Returns:
            A generator of log lines, each without its newline.
        """
        container = self._require_container()
        return self._stream_lines(container, follow=follow, tail=tail)

    def __repr__(self) -> str:
        config = self._config
        state = f"url={self._url!r}" if self._url else "not started"
        container = f", container={self._container.short_id!r}" if self._container is not None else ""
        return (
            f"TGIServer(variant={config.variant.value!r}, image={config.image!r}, gpus={config.gpus!r}, "
            f"api_key={'set' if config.api_key else None}, {state}{container})"
        )

    # -- docker steps -----------------------------------------------------------------------------------

    def _connect(self) -> DockerClient:
        if self._docker is not None:
            return self._docker
        source = self._docker_source
        if source is None:
            docker = _import_docker()
            with _docker_errors("connect to the Docker daemon"):
                client: DockerClient = docker.from_env()
        elif callable(source):
            with _docker_errors("connect to the Docker daemon"):
                client = source()
        else:
            client = source
        try:
            with _docker_errors("connect to the Docker daemon"):
                client.ping()
        except BaseException:
            if self._owns_docker:
                client.close()
            raise
        self._docker = client
        return client

    @property
    def _owns_docker(self) -> bool:
        """Whether this handle made its docker client (`docker.from_env()` or the factory it was given)."""
        return self._docker_source is None or callable(self._docker_source)

    def _release_docker(self) -> None:
        """Close the docker client's connection pool if this handle made the client (a given one is the caller's)."""
        client, self._docker = self._docker, None
        if client is not None and self._owns_docker:
            client.close()

    def _preflight(self, client: DockerClient) -> None:
        if self._config.gpus is None or not self._check_gpu_runtime:
            return
        with _docker_errors("read `docker info`"):
            info: Mapping[str, Any] = client.info()
        runtimes = [str(name) for name in (info.get("Runtimes") or {})] + [str(info.get("DefaultRuntime", ""))]
        if not any("nvidia" in name for name in runtimes):
            raise GPUUnavailableError(
                f"{self._gpus_setting()} was requested, but the Docker daemon has no NVIDIA runtime (its "
                f"runtimes: {', '.join(sorted(set(filter(None, runtimes))))}). Install the NVIDIA driver and the "
                "NVIDIA Container Toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` and restart "
                f"dockerd (docs/launcher.md). For a CPU-only image such as the emulator {self._wording.no_gpu}; "
                f"if `docker run --gpus all` works here anyway, {self._wording.skip_gpu_check}."
            )

    def _attach(self, client: DockerClient) -> bool:
        """Attach to a running container with our config hash; drop dead ones with it. True if attached."""
        wanted = [f"{LABEL_PACKAGE}={PACKAGE_LABEL_VALUE}", f"{LABEL_CONFIG_HASH}={self.config_hash}"]
        filters: dict[str, str | list[str] | bool] = {"label": wanted}
        with _docker_errors("list containers"):
            found = client.containers.list(all=True, filters=filters, ignore_removed=True)
        for container in found:
            if container.status in ("running", "restarting"):
                self._container, self._owned = container, False
                self._log_lines_seen = 0
                self._progress(ProgressEvent(Stage.START, f"reusing container {container.short_id}"))
                return True
        for container in found:  # exited leftovers of the same config would block our container name
            with _docker_errors("remove a stopped container", missing_ok=True):
                container.remove(force=True, v=True)
        return False

    def _ensure_image(self, client: DockerClient) -> None:
        image = self._config.image
        if self._pull != "always" and _image_present(client, image):
            return
        if self._pull == "never":
            raise ContainerStartError(
                f"the image {image!r} is not on the Docker host and pull='never': build or pull it first",
                exit_code=None,
                logs="",
            )
        docker = _import_docker()
        repository, tag = docker.utils.parse_repository_tag(image)
        tracker = PullProgress(image)
        self._progress(ProgressEvent(Stage.PULL, f"pulling {image}"))
        with _docker_errors(f"pull the image {image!r}", pulling=image, wording=self._wording):
            for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if event.get("error"):
                    raise ContainerStartError(
                        f"could not pull the image {image!r}: {event['error']}. {_pull_advice(self._wording)}",
                        exit_code=None,
                        logs="",
                    )
                update = tracker.update(event)
                if update is not None:
                    self._progress(update)

    def _create_and_start(self, client: DockerClient) -> None:
        config = self._config
        if config.cache_dir and os.path.isabs(config.cache_dir) and is_local_daemon(client.api.base_url):
            # Docker would create a missing bind source itself, owned by root.
            Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        owner = Owner.current()
        kwargs = container_create_kwargs(
            config,
            version=_package_version(),
            name=self._name,
            creator=current_creator(),
            extra_labels=owner_labels(owner, keep=self._keep),
        )
        with _docker_errors(f"create a container from {config.image!r}", wording=self._wording):
            container = client.containers.create(**kwargs)
        self._container, self._owned = container, True
        self._log_lines_seen = 0
        self._watch_owner(client, container, owner)
        if config.chat_template:
            # put_archive into the created container instead of a bind mount: works with remote daemons too.
            with _docker_errors("copy the tokenizer config into the container"):
                container.put_archive("/", tokenizer_config_archive())
        with _docker_errors("start the container", wording=self._wording):
            container.start()
        self._progress(ProgressEvent(Stage.START, f"container {container.short_id} started from {config.image}"))

    def _watch_owner(self, client: DockerClient, container: Container, owner: Owner) -> None:
        """Start the reaper that removes `container` once this process is gone (real Docker only)."""
        try:
            from docker import DockerClient as RealDockerClient
        except ImportError:  # pragma: no cover - a container was just created through the SDK
            return
        if not isinstance(client, RealDockerClient):
            return  # a stand-in client: the reaper could not reach whatever it stands for
        docker_host = None if self._docker_source is None else _docker_host_of(client.api.base_url)
        try:
            self._reaper = Reaper.spawn(str(container.id), owner, docker_host=docker_host)
        except OSError as exc:  # no reaper: the orphan sweep of the next start still removes it
            warnings.warn(
                f"zephyr_tgi could not start the reaper for container {container.short_id} ({exc}); if this "
                "process is killed, the next TGIServer start or `zephyr-tgi down --orphans` removes it",
                RuntimeWarning,
                stacklevel=3,
            )

    def _release_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.release()

    def _remove_orphans(self, client: DockerClient) -> None:
        """Remove this host's containers whose owner is gone (and that were not kept on purpose)."""
        with _docker_errors("list containers"):
            found = find_containers(client)
        by_id = {str(container.id): container for container in found}
        for record in describe_containers(found):
            if not record.is_orphan:
                continue
            with _docker_errors("remove an orphaned container", missing_ok=True):
                by_id[record.id].remove(force=True, v=True)
                self._progress(
                    ProgressEvent(Stage.START, f"removed orphaned container {record.name} (owner {record.owner} gone)")
                )

    def _gpus_setting(self) -> str:
        gpus = self._config.gpus
        if not self._wording.for_cli:
            return f"gpus={gpus!r}"
        shown = gpus if isinstance(gpus, str | int) else ",".join(gpus or ())
        return f"--gpus {shown}"

    def _resolve_url(self, container: Container) -> str | None:
        """Read the published port back from docker; None until docker has assigned it."""
        with _docker_errors("inspect the container", missing_ok=True):
            container.reload()
            address = published_address(container.attrs, ENGINE_CONTAINERS[self._config.engine].port)
            if address is not None:
                base_url = self._docker.api.base_url if self._docker is not None else None
                self._url = f"http://{url_host(address[0], docker_base_url=base_url)}:{address[1]}"
        return self._url

    def _has_exited(self, container: Container) -> bool:
        with _docker_errors("inspect the container", missing_ok=True):
            container.reload()
            return container.status in ("exited", "dead", "removing")
        return True  # the container is gone

    def _pump_logs(self, container: Container) -> None:
        """Report progress stages from log lines not seen before (docker returns the whole log each time)."""
        with _docker_errors("read the container logs", missing_ok=True):
            raw: bytes = container.logs(stdout=True, stderr=True)
            lines = raw.decode("utf-8", "replace").split("\n")[:-1]  # complete lines only
            for line in lines[self._log_lines_seen :]:
                event = parse_stage(line)
                if event is not None:
                    self._progress(event)
            self._log_lines_seen = max(self._log_lines_seen, len(lines))

    def _log_tail(self, container: Container, lines: int = LOG_TAIL_LINES) -> str:
        with _docker_errors("read the container logs", missing_ok=True):
            raw: bytes = container.logs(stdout=True, stderr=True, tail=lines)
            return redact(tail(raw.decode("utf-8", "replace"), lines), self._secrets())
        return "(the container is gone: no logs)"

    def _start_failure(self, container: Container) -> ContainerStartError:
        with _docker_errors("inspect the container", missing_ok=True):
            container.reload()
            exit_code: int | None = container.attrs.get("State", {}).get("ExitCode")
            full_logs = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            logs = redact(tail(full_logs), self._secrets())
            hints = failure_hints(full_logs, for_cli=self._wording.for_cli)
            hint_text = "".join(f"\n  hint: {hint}" for hint in hints) or (
                "\n  hint: read the log lines below; common causes are no GPU runtime, CUDA out of memory at "
                "warmup, a bad revision, or a gated/private repo without HF_TOKEN (docs/launcher.md)"
            )
            return ContainerStartError(
                f"the TGI container {container.short_id} exited with code {exit_code} before it was ready."
                f"{hint_text}\nLast {LOG_TAIL_LINES} log lines:\n{logs}",
                exit_code=exit_code,
                logs=logs,
            )
        return ContainerStartError(
            f"the TGI container {container.short_id} disappeared before it was ready (removed by someone else, "
            "or started with --rm); its logs are gone with it",
            exit_code=None,
            logs="",
        )

    def _stream_lines(self, container: Container, *, follow: bool, tail: int | None) -> Generator[str, None, None]:
        secrets = self._secrets()
        splitter = LineSplitter()
        with _docker_errors("read the container logs"):
            stream = container.logs(stream=True, follow=follow, tail="all" if tail is None else tail)
            try:
                for chunk in stream:
                    for line in splitter.feed(chunk.decode("utf-8", "replace")):
                        yield redact(line, secrets)
                for line in splitter.flush():
                    yield redact(line, secrets)
            finally:
                _close_log_stream(stream)

    def _discard_after_failure(self, exc: BaseException) -> None:
        """Remove a container we started for a start that failed (detach from a reused one), keeping the error."""
        try:
            self.stop()
        except ServerError as cleanup_error:
            exc.add_note(f"zephyr_tgi: removing the failed container also failed: {cleanup_error}")

    # -- small helpers ----------------------------------------------------------------------------------

    def _require_container(self) -> Container:
        if self._container is None:
            raise ServerError("the server is not started: call start() or use `with TGIServer(...) as server`")
        return self._container

    def _api_key_value(self) -> str | None:
        key = self._config.api_key
        return key.get_secret_value() if key is not None else None

    def _secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self._config.api_key, self._config.hf_token) if s is not None]


def _no_progress(event: ProgressEvent) -> None:
    """Progress callback for progress=False."""


def _normalise_gpus(gpus: Literal["all"] | int | Sequence[str] | None) -> GPUSpec:
    if isinstance(gpus, str):
        return parse_gpus(gpus)
    if gpus is None or isinstance(gpus, int):
        return gpus
    return tuple(gpus)


def _normalise_cache_dir(cache_dir: str | os.PathLike[str]) -> str:
    # A bare name is a docker named volume (works with remote daemons); anything path-like is made absolute.
    text = os.fspath(cache_dir)
    if isinstance(cache_dir, os.PathLike) or "/" in text or text.startswith(("~", ".")):
        return str(Path(text).expanduser().resolve())
    return text


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zephyr-tgi")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _close_log_stream(stream: Any) -> None:
    """Close a docker log stream and its HTTP response.

    docker-py's `CancellableStream.close()` shuts the socket down (which ends a read blocked in another
    thread) but leaves the response's file object holding it, so the socket was only freed by the garbage
    collector, with a ResourceWarning. The response (a `requests.Response`) is closed here explicitly;
    `_response` is the only handle docker-py keeps on it, read here and never changed.
    """
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with suppress(OSError):  # a socket already shut down may complain while it is released
            response.close()


def _import_docker() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailableError(f"starting and listing containers needs the docker SDK: {_INSTALL_HINT}") from exc
    return docker


def _image_present(client: DockerClient, image: str) -> bool:
    with _docker_errors(f"inspect the image {image!r}", missing_ok=True):
        client.images.get(image)
        return True
    return False


@contextmanager
def _docker_errors(
    action: str, *, missing_ok: bool = False, pulling: str | None = None, wording: Wording = PYTHON
) -> Iterator[None]:
    """Translate docker SDK / requests errors raised in the block; `missing_ok` swallows "not found".

    `pulling` names the image being pulled: the registry's refusals then mean "image unavailable".
    `wording` names the settings in the hints (Python arguments or command-line flags).
    """
    try:
        yield
    except ZephyrTGIError:
        raise
    except Exception as exc:
        translated = _translate_docker_error(exc, action, pulling=pulling, wording=wording)
        if translated is None:
            raise
        if missing_ok and _is_not_found(exc):
            return
        raise translated from exc


def _is_not_found(exc: BaseException) -> bool:
    import docker.errors

    return isinstance(exc, docker.errors.NotFound)


def _pull_advice(wording: Wording) -> str:
    """What to try when an image cannot be pulled: registry access first; the emulator only for tests."""
    return (
        f"Check the image name and that this host reaches its registry (`docker login` for a private one, "
        f"a registry mirror behind a firewall), `docker pull` it yourself, or {wording.other_image}. "
        "Only for tests without a GPU: the emulator image (docker/emulator/build.sh)"
    )


def _docker_host_of(base_url: str) -> str | None:
    """A DOCKER_HOST value for the daemon behind `base_url`; None when the environment's must do.

    docker-py keeps no usable address for sockets, named pipes and ssh (`http+docker://...`).
    """
    scheme, _, rest = base_url.partition("://")
    return f"tcp://{rest}" if scheme in ("http", "https", "tcp") and rest else None


def _translate_docker_error(
    exc: BaseException, action: str, *, pulling: str | None = None, wording: Wording = PYTHON
) -> ServerError | None:
    """Our error for an exception of the docker SDK or requests; None for anything else (a bug: re-raise)."""
    try:
        import docker.errors
        import requests.exceptions
    except ImportError:  # without the SDK no docker exception can have been raised
        return None
    if isinstance(exc, docker.errors.ImageNotFound):
        return ContainerStartError(
            f"could not {action}: image not found ({_explain(exc)}). {_pull_advice(wording)}",
            exit_code=None,
            logs="",
        )
    if isinstance(exc, docker.errors.APIError):
        text = _explain(exc)
        if pulling is not None:
            return ContainerStartError(
                f"the image {pulling!r} is not on the Docker host and could not be pulled: {text}. "
                f"{_pull_advice(wording)}",
                exit_code=None,
                logs="",
            )
        if "could not select device driver" in text or "nvidia-container-cli" in text:
            return GPUUnavailableError(
                f"Docker cannot give the container a GPU ({text}): install the NVIDIA Container Toolkit and "
                f"configure the docker runtime (docs/launcher.md), or {wording.no_gpu} for a CPU-only image"
            )
        if "port is already allocated" in text or "address already in use" in text:
            return ContainerStartError(
                f"could not {action}: the host port is taken ({text}); {wording.other_port}",
                exit_code=None,
                logs="",
            )
        if exc.status_code == 409 and "already in use" in text:
            return ContainerStartError(
                f"could not {action}: {text}; {wording.remove_named}",
                exit_code=None,
                logs="",
            )
        if isinstance(exc, docker.errors.NotFound):
            return ContainerStartError(f"could not {action}: not found ({text})", exit_code=None, logs="")
        return ServerError(f"Docker refused to {action}: {text}")
    if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
        detail = str(exc)
        hint = " (permission denied: add your user to the `docker` group)" if "ermission denied" in detail else ""
        return DockerUnavailableError(
            f"cannot reach the Docker daemon to {action}: {detail}{hint}. Is dockerd running, and does "
            "`docker info` work with this DOCKER_HOST?"
        )
    return None


def _explain(exc: Any) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
