"""Each engine's container for each GPTQ branch: image, port, command, secrets, mounts."""

from __future__ import annotations

import io
import tarfile

import pytest

from zephyr_tgi import VARIANTS, ConfigurationError
from zephyr_tgi._launcher.args import (
    build_environment,
    build_launcher_args,
    container_create_kwargs,
    make_config,
    tokenizer_config_archive,
)
from zephyr_tgi._launcher.engine_args import CHAT_TEMPLATE_PATH, ENGINE_CONTAINERS

BRANCHES = [row.branch for row in VARIANTS.values()]


def test_there_are_six_branches() -> None:
    assert len(BRANCHES) == 6


@pytest.mark.parametrize("branch", BRANCHES)
def test_vllm_serves_each_branch_by_revision_without_naming_gptq(branch: str) -> None:
    config = make_config(engine="vllm", variant=branch, max_total_tokens=4096)
    args = build_launcher_args(config)
    assert args[0] == "TheBloke/zephyr-7B-alpha-GPTQ"  # positional for `vllm serve`
    assert args[args.index("--revision") + 1] == branch
    assert args[args.index("--max-model-len") + 1] == "4096"
    assert args[args.index("--chat-template") + 1] == CHAT_TEMPLATE_PATH
    assert args[args.index("--generation-config") + 1] == "vllm"
    assert not any("quantiz" in arg for arg in args)  # vLLM reads GPTQ from the checkpoint (Marlin)
    assert config.image == ENGINE_CONTAINERS["vllm"].image
    assert not config.image.endswith(":latest")


@pytest.mark.parametrize("branch", BRANCHES)
def test_sglang_serves_each_branch_by_revision_with_metrics(branch: str) -> None:
    config = make_config(engine="sglang", variant=branch, max_total_tokens=4096)
    args = build_launcher_args(config)
    assert args[args.index("--model-path") + 1] == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert args[args.index("--revision") + 1] == branch
    assert args[args.index("--context-length") + 1] == "4096"
    assert args[args.index("--chat-template") + 1] == CHAT_TEMPLATE_PATH
    assert "--enable-metrics" in args
    assert not any("quantiz" in arg for arg in args)
    assert config.image == ENGINE_CONTAINERS["sglang"].image


@pytest.mark.parametrize("branch", BRANCHES)
def test_tgi_still_serves_each_branch_as_before(branch: str) -> None:
    args = build_launcher_args(make_config(variant=branch))
    assert args[:4] == ["--model-id", "TheBloke/zephyr-7B-alpha-GPTQ", "--revision", branch]
    assert args[args.index("--quantize") + 1] == "gptq"


@pytest.mark.parametrize(("engine", "port"), [("tgi", 80), ("vllm", 8000), ("sglang", 30000)])
def test_the_container_publishes_the_engines_port_and_mounts_its_cache(engine: str, port: int) -> None:
    config = make_config(engine=engine, cache_dir="/host/hf", port=8123)
    kwargs = container_create_kwargs(config, version="0", name=None)
    assert kwargs["ports"] == {f"{port}/tcp": ("127.0.0.1", 8123)}
    [(source, mount)] = kwargs["volumes"].items()
    assert source == "/host/hf"
    assert mount["bind"] == ("/data" if engine == "tgi" else "/root/.cache/huggingface")
    if engine == "sglang":
        assert kwargs["entrypoint"] == ["python3", "-m", "sglang.launch_server"]
    else:
        assert "entrypoint" not in kwargs


def test_vllms_api_key_goes_through_its_environment_not_the_command() -> None:
    config = make_config(engine="vllm", api_key="s3cret", hf_token="hf_x")
    assert "s3cret" not in " ".join(build_launcher_args(config))
    assert build_environment(config) == {"VLLM_API_KEY": "s3cret", "HF_TOKEN": "hf_x"}


def test_sglangs_api_key_is_a_flag_because_it_reads_no_variable() -> None:
    config = make_config(engine="sglang", api_key="s3cret")
    args = build_launcher_args(config)
    assert args[args.index("--api-key") + 1] == "s3cret"
    assert "API_KEY" not in build_environment(config)


def test_shards_become_each_engines_tensor_parallel_flag() -> None:
    vllm = build_launcher_args(make_config(engine="vllm", num_shard=2, gpus=2))
    sglang = build_launcher_args(make_config(engine="sglang", num_shard=2, gpus=2))
    assert vllm[vllm.index("--tensor-parallel-size") + 1] == "2"
    assert sglang[sglang.index("--tp-size") + 1] == "2"


def test_a_tgi_only_flag_is_refused_for_the_other_engines() -> None:
    with pytest.raises(ConfigurationError, match="enable_prefill_logprobs is a TGI flag"):
        build_launcher_args(make_config(engine="vllm", enable_prefill_logprobs=True))


def test_an_explicit_image_wins_over_the_engines_pin() -> None:
    assert make_config(engine="vllm", image="registry.local/vllm:mine").image == "registry.local/vllm:mine"


def test_the_archive_carries_the_chat_template_the_engines_read() -> None:
    with tarfile.open(fileobj=io.BytesIO(tokenizer_config_archive())) as archive:
        names = archive.getnames()
        template = archive.extractfile(CHAT_TEMPLATE_PATH.lstrip("/"))
        assert template is not None
        text = template.read().decode()
    assert "zephyr_tgi/tokenizer_config.json" in names
    assert "<|assistant|>" in text
    assert "eos_token" in text
