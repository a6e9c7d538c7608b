"""Each engine's container: its pinned image, port, command and secrets, from one `LaunchConfig`.

TGI's arguments stay in `args.build_launcher_args`; vLLM's and SGLang's are built here. GPTQ is never named on
their command lines: both read the method from the checkpoint's quantize config (and pick Marlin kernels on
Ampere and newer), and an explicit `--quantization gptq` used to force vLLM's slow kernel (vLLM PR #14056).
The chat template is the packaged whitespace-safe Zephyr template, copied into the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from .args import LaunchConfig

__all__ = [
    "CHAT_TEMPLATE_PATH",
    "ENGINE_CONTAINERS",
    "EngineContainer",
    "engine_command",
    "engine_environment",
]

# Where the packaged chat template lands in the container (beside TGI's tokenizer config).
CHAT_TEMPLATE_PATH = "/zephyr_tgi/zephyr_chat_template.jinja"


@dataclass(frozen=True, slots=True)
class EngineContainer:
    """What differs between the engines' images."""

    image: str  # pinned: a tag, never `latest`
    port: int  # the port the server listens on inside the container
    entrypoint: tuple[str, ...] | None  # None: the image's own entrypoint takes the arguments
    cache_mount: str  # where the Hugging Face cache is mounted


ENGINE_CONTAINERS: dict[str, EngineContainer] = {
    "tgi": EngineContainer("ghcr.io/huggingface/text-generation-inference:3.3.7", 80, None, "/data"),
    # vllm/vllm-openai's entrypoint is `vllm serve`: the model comes first, positionally.
    "vllm": EngineContainer("vllm/vllm-openai:v0.33.0", 8000, None, "/root/.cache/huggingface"),
    # lmsysorg/sglang has no server entrypoint: the command starts one.
    "sglang": EngineContainer(
        "lmsysorg/sglang:v0.5.23", 30000, ("python3", "-m", "sglang.launch_server"), "/root/.cache/huggingface"
    ),
}


def _refuse_tgi_only(config: LaunchConfig, engine: str) -> None:
    if config.enable_prefill_logprobs:
        raise ConfigurationError(
            f"enable_prefill_logprobs is a TGI flag; {engine} returns prompt logprobs per request (prompt_logprobs)"
        )


def engine_command(config: LaunchConfig) -> list[str]:
    """The container command for vLLM or SGLang (an API key goes through `engine_environment` where it can)."""
    if config.engine == "vllm":
        _refuse_tgi_only(config, "vLLM")
        args = [
            config.model_id,
            "--revision", config.variant.value,
            "--max-model-len", str(config.max_total_tokens),
            "--chat-template", CHAT_TEMPLATE_PATH,
            # Without it vLLM applies the repository's generation_config.json sampling defaults.
            "--generation-config", "vllm",
            "--host", "0.0.0.0",
            "--port", str(ENGINE_CONTAINERS["vllm"].port),
        ]  # fmt: skip
        if config.num_shard is not None:
            args += ["--tensor-parallel-size", str(config.num_shard)]
        return args + list(config.extra_args)
    if config.engine == "sglang":
        _refuse_tgi_only(config, "SGLang")
        args = [
            "--model-path", config.model_id,
            "--revision", config.variant.value,
            "--context-length", str(config.max_total_tokens),
            "--chat-template", CHAT_TEMPLATE_PATH,
            "--enable-metrics",
            "--host", "0.0.0.0",
            "--port", str(ENGINE_CONTAINERS["sglang"].port),
        ]  # fmt: skip
        if config.num_shard is not None:
            args += ["--tp-size", str(config.num_shard)]
        if config.api_key is not None and config.api_key.get_secret_value():
            # SGLang reads its key from the command line only: it shows in `docker inspect`.
            args += ["--api-key", config.api_key.get_secret_value()]
        return args + list(config.extra_args)
    raise ConfigurationError(f"engine_command builds vLLM's and SGLang's commands, not {config.engine!r}'s")


def engine_environment(config: LaunchConfig) -> dict[str, str]:
    """The container environment for vLLM or SGLang: the user's variables, HF_TOKEN, vLLM's VLLM_API_KEY."""
    environment = dict(config.env)
    if config.hf_token is not None and config.hf_token.get_secret_value():
        environment["HF_TOKEN"] = config.hf_token.get_secret_value()
    if config.engine == "vllm" and config.api_key is not None and config.api_key.get_secret_value():
        environment["VLLM_API_KEY"] = config.api_key.get_secret_value()  # what --api-key defaults to
    return environment
