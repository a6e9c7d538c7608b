"""What container the launcher asks for: TGI flags, environment, docker kwargs, labels, hash, validation."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from zephyr_tgi._errors import ConfigurationError
from zephyr_tgi._launcher.args import (
    DEFAULT_IMAGE,
    LABEL_API_KEY,
    LABEL_CONFIG_HASH,
    LABEL_CREATOR,
    LABEL_PACKAGE,
    LABEL_VARIANT,
    TOKENIZER_CONFIG_PATH,
    LaunchConfig,
    build_environment,
    build_launcher_args,
    config_hash,
    container_create_kwargs,
    current_creator,
    device_requests,
    environment_defaults,
    is_local_daemon,
    labels,
    make_config,
    parse_gpus,
    published_address,
    tokenizer_config_archive,
    url_host,
)
from zephyr_tgi._launcher.variants import GPTQVariant

REFERENCE_TEMPLATE = Path(__file__).resolve().parents[3] / "shared" / "reference"


def config(**overrides: Any) -> LaunchConfig:
    return make_config(**({"cache_dir": "/cache"} | overrides))


def flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# -- launcher arguments ------------------------------------------------------------------------------------


def test_default_arguments_are_theblokes_recommended_budget_with_gptq_and_no_telemetry() -> None:
    args = build_launcher_args(config())
    assert args == [
        "--model-id", "TheBloke/zephyr-7B-alpha-GPTQ",
        "--revision", "main",
        "--quantize", "gptq",
        "--max-input-tokens", "3696",
        "--max-total-tokens", "4096",
        "--max-batch-prefill-tokens", "4096",
        "--usage-stats", "off",
        "--tokenizer-config-path", TOKENIZER_CONFIG_PATH,
    ]  # fmt: skip


def test_the_variant_becomes_the_revision() -> None:
    args = build_launcher_args(config(variant="gptq-8bit--1g-actorder_True"))
    assert flag_value(args, "--revision") == "gptq-8bit--1g-actorder_True"


def test_token_budget_flags_are_overridable() -> None:
    args = build_launcher_args(config(max_input_tokens=1000, max_total_tokens=2048, max_batch_prefill_tokens=1024))
    assert (flag_value(args, "--max-input-tokens"), flag_value(args, "--max-total-tokens")) == ("1000", "2048")
    assert flag_value(args, "--max-batch-prefill-tokens") == "1024"


def test_optional_flags_appear_only_when_asked_and_extra_args_come_last() -> None:
    args = build_launcher_args(
        config(num_shard=2, gpus=2, enable_prefill_logprobs=True, usage_stats="no-stack", extra_args=("--env",))
    )
    assert flag_value(args, "--num-shard") == "2"
    assert "--enable-prefill-logprobs" in args
    assert flag_value(args, "--usage-stats") == "no-stack"
    assert args[-1] == "--env"


def test_without_the_chat_template_no_tokenizer_config_is_passed() -> None:
    assert "--tokenizer-config-path" not in build_launcher_args(config(chat_template=False))


def test_secrets_never_appear_in_the_arguments() -> None:
    args = build_launcher_args(config(api_key="sk-secret", hf_token="hf_secret"))
    assert not any("secret" in arg for arg in args)
    assert "--api-key" not in args


# -- environment ---------------------------------------------------------------------------------------------


def test_hf_token_and_api_key_are_passed_as_environment_only_when_present() -> None:
    assert build_environment(config()) == {}
    environment = build_environment(config(hf_token="hf_x", api_key="k", env={"LOG_LEVEL": "debug"}))
    assert environment == {"LOG_LEVEL": "debug", "HF_TOKEN": "hf_x", "API_KEY": "k"}


def test_empty_secrets_count_as_absent() -> None:
    assert build_environment(config(hf_token="", api_key="")) == {}


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "API_KEY"])
def test_secrets_in_env_are_refused_so_they_stay_out_of_reprs_and_hashes(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        config(env={name: "x"})


def test_environment_defaults_read_hf_token_and_hf_home() -> None:
    found = environment_defaults({"HF_TOKEN": "hf_a", "HF_HOME": "/models"})
    assert (found["hf_token"], found["cache_dir"]) == ("hf_a", "/models")


def test_environment_defaults_fall_back_to_the_legacy_token_and_the_home_cache(tmp_path: Path) -> None:
    found = environment_defaults({"HUGGING_FACE_HUB_TOKEN": "hf_b"}, home=tmp_path)
    assert found["hf_token"] == "hf_b"
    assert found["cache_dir"] == str(tmp_path / ".cache" / "huggingface")
    assert "hf_token" not in environment_defaults({}, home=tmp_path)


def test_environment_defaults_read_zephyr_tgi_variables() -> None:
    found = environment_defaults(
        {"ZEPHYR_TGI_VARIANT": "main", "ZEPHYR_TGI_IMAGE": "img", "ZEPHYR_TGI_GPUS": "0,1", "ZEPHYR_TGI_API_KEY": "k"}
    )
    assert (found["variant"], found["image"], found["gpus"], found["api_key"]) == ("main", "img", ("0", "1"), "k")


# -- GPUs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("all", [{"driver": "", "count": -1, "capabilities": [["gpu"]]}]),
        (2, [{"driver": "", "count": 2, "capabilities": [["gpu"]]}]),
        (("0", "GPU-abc"), [{"driver": "", "device_ids": ["0", "GPU-abc"], "capabilities": [["gpu"]]}]),
        (None, []),
    ],
)
def test_gpus_become_docker_device_requests_like_docker_run_gpus(gpus: Any, expected: list[dict[str, Any]]) -> None:
    assert device_requests(gpus) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("all", "all"), ("ALL", "all"), ("none", None), ("", None), ("0", None), ("3", 3), ("0,2", ("0", "2"))],
)
def test_gpu_settings_parse_from_text(text: str, expected: Any) -> None:
    assert parse_gpus(text) == expected


def test_gpus_given_as_a_list_are_stored_as_a_tuple() -> None:
    assert config(gpus=["1", "3"]).gpus == ("1", "3")


@pytest.mark.parametrize("gpus", [0, True, [], [""]])
def test_nonsense_gpu_settings_are_refused(gpus: Any) -> None:
    with pytest.raises(ConfigurationError, match="gpus"):
        config(gpus=gpus)


def test_more_shards_than_gpus_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="num_shard"):
        config(gpus=1, num_shard=2)
    assert config(gpus="all", num_shard=4).num_shard == 4


# -- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_input", "max_total"), [(4096, 4096), (5000, 4096)])
def test_input_tokens_must_be_below_total_tokens(max_input: int, max_total: int) -> None:
    with pytest.raises(ConfigurationError, match="max_input_tokens"):
        config(max_input_tokens=max_input, max_total_tokens=max_total)


def test_prefill_budget_must_hold_a_whole_input() -> None:
    with pytest.raises(ConfigurationError, match="max_batch_prefill_tokens"):
        config(max_batch_prefill_tokens=2048)
    assert config(max_input_tokens=2000, max_batch_prefill_tokens=2048).max_batch_prefill_tokens == 2048


def test_an_unknown_variant_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ConfigurationError, match="gptq-4bit-32g-actorder_True"):
        config(variant="gptq-2bit")


def test_variant_accepts_the_enum() -> None:
    assert config(variant=GPTQVariant.BITS8_GROUP32).variant is GPTQVariant.BITS8_GROUP32


@pytest.mark.parametrize(
    "flag", ["--max-total-tokens", "--max-input-length=10", "--revision", "--api-key", "--port", "--hostname"]
)
def test_extra_args_may_not_repeat_a_flag_that_has_a_parameter(flag: str) -> None:
    with pytest.raises(ConfigurationError, match=flag.split("=")[0]):
        config(extra_args=(flag, "1"))


def test_host_must_be_an_ip_address_and_localhost_means_loopback() -> None:
    assert config(host="localhost").host == "127.0.0.1"
    assert config(host="::1").is_loopback
    assert not config(host="0.0.0.0").is_loopback
    with pytest.raises(ConfigurationError, match="host"):
        config(host="my-machine")


@pytest.mark.parametrize("port", [0, 70000])
def test_port_must_be_a_tcp_port(port: int) -> None:
    with pytest.raises(ConfigurationError, match="port"):
        config(port=port)


def test_shm_size_must_look_like_a_docker_size() -> None:
    assert config(shm_size="2g").shm_size == "2g"
    with pytest.raises(ConfigurationError, match="shm_size"):
        config(shm_size="lots")


def test_the_config_repr_hides_secrets() -> None:
    text = repr(config(api_key="sk-very-secret", hf_token="hf_very_secret"))
    assert "very" not in text


# -- labels and hash -----------------------------------------------------------------------------------------


def test_labels_name_package_variant_and_hash_but_no_secret() -> None:
    cfg = config(variant="gptq-4bit-64g-actorder_True", api_key="sk-secret")
    found = labels(cfg, version="1.2.3")
    assert found[LABEL_PACKAGE] == "zephyr-tgi"
    assert found[LABEL_VARIANT] == "gptq-4bit-64g-actorder_True"
    assert found[LABEL_CONFIG_HASH] == config_hash(cfg)
    assert found[LABEL_API_KEY] == "set"
    assert not any("secret" in value for value in found.values())


def test_the_hash_is_stable_and_changes_with_what_runs() -> None:
    assert config_hash(config()) == config_hash(config())
    assert len(config_hash(config())) == 16
    assert config_hash(config()) != config_hash(config(variant="gptq-4bit-32g-actorder_True"))
    assert config_hash(config()) != config_hash(config(max_total_tokens=8192))
    assert config_hash(config()) != config_hash(config(image="other:1"))


def test_the_hash_ignores_secret_values_but_not_whether_a_key_is_set() -> None:
    assert config_hash(config(api_key="a", hf_token="x")) == config_hash(config(api_key="b", hf_token="y"))
    assert config_hash(config(hf_token="x")) == config_hash(config())
    assert config_hash(config(api_key="a")) != config_hash(config())


# -- docker kwargs -------------------------------------------------------------------------------------------


def test_create_kwargs_publish_on_loopback_with_an_ephemeral_port_by_default() -> None:
    kwargs = container_create_kwargs(config(), version="0.1.0", name=None)
    assert kwargs["ports"] == {"80/tcp": ("127.0.0.1", None)}
    assert kwargs["image"] == DEFAULT_IMAGE
    assert kwargs["shm_size"] == "1g"
    assert kwargs["volumes"] == {"/cache": {"bind": "/data", "mode": "rw"}}
    assert kwargs["device_requests"] == [{"driver": "", "count": -1, "capabilities": [["gpu"]]}]
    assert kwargs["command"] == build_launcher_args(config())
    assert kwargs["labels"][LABEL_PACKAGE] == "zephyr-tgi"
    assert "name" not in kwargs


def test_create_kwargs_for_a_cpu_image_have_no_device_request() -> None:
    kwargs = container_create_kwargs(config(gpus=None, host="0.0.0.0", port=8080), version="0", name="x")
    assert "device_requests" not in kwargs
    assert kwargs["ports"] == {"80/tcp": ("0.0.0.0", 8080)}
    assert kwargs["name"] == "x"


def test_default_image_is_a_pinned_release() -> None:
    assert DEFAULT_IMAGE == "ghcr.io/huggingface/text-generation-inference:3.3.7"


# -- the packaged tokenizer config ---------------------------------------------------------------------------


def test_the_tokenizer_config_archive_holds_the_whitespace_safe_zephyr_template() -> None:
    with tarfile.open(fileobj=io.BytesIO(tokenizer_config_archive())) as archive:
        member = archive.getmember(TOKENIZER_CONFIG_PATH.lstrip("/"))
        assert member.mode == 0o444
        extracted = archive.extractfile(member)
        assert extracted is not None
        data = json.loads(extracted.read())
    assert (data["bos_token"], data["eos_token"], data["unk_token"]) == ("<s>", "</s>", "<unk>")
    template_file = REFERENCE_TEMPLATE / "zephyr_chat_template_whitespace_safe.jinja"
    if template_file.is_file():  # the shared reference folder sits beside the clone in development
        assert data["chat_template"] == template_file.read_text(encoding="utf-8")
    assert data["chat_template"].startswith("{%- for message in messages %}")


# -- reading back the published port -------------------------------------------------------------------------


def attrs(bindings: list[dict[str, str]] | None) -> dict[str, Any]:
    return {"NetworkSettings": {"Ports": {"80/tcp": bindings}}}


def test_the_published_port_is_read_back_from_container_attrs() -> None:
    assert published_address(attrs([{"HostIp": "127.0.0.1", "HostPort": "49153"}])) == ("127.0.0.1", 49153)


def test_ipv4_bindings_are_preferred_over_ipv6() -> None:
    found = published_address(attrs([{"HostIp": "::", "HostPort": "1"}, {"HostIp": "0.0.0.0", "HostPort": "2"}]))
    assert found == ("0.0.0.0", 2)


@pytest.mark.parametrize("value", [None, [], [{"HostIp": "127.0.0.1", "HostPort": ""}]])
def test_no_published_port_yet_reads_as_none(value: Any) -> None:
    assert published_address(attrs(value)) is None
    assert published_address({}) is None


@pytest.mark.parametrize(
    ("bound", "base_url", "expected"),
    [
        ("127.0.0.1", "http+docker://localhost", "127.0.0.1"),
        ("0.0.0.0", "http+docker://localhost", "127.0.0.1"),
        ("0.0.0.0", "http://gpu-box:2375", "gpu-box"),
        ("", "https://10.0.0.5:2376", "10.0.0.5"),
        ("::1", None, "[::1]"),
        ("192.168.1.4", "http://gpu-box:2375", "192.168.1.4"),
    ],
)
def test_url_host_follows_the_binding_and_the_daemon(bound: str, base_url: str | None, expected: str) -> None:
    assert url_host(bound, docker_base_url=base_url) == expected


def test_unix_socket_and_named_pipe_daemons_are_local() -> None:
    assert is_local_daemon("http+docker://localhost")
    assert is_local_daemon("http+docker://localnpipe")
    assert not is_local_daemon("tcp://gpu-box:2375")
    assert not is_local_daemon("http+docker://ssh")


def test_the_creator_label_names_this_process_when_given() -> None:
    assert LABEL_CREATOR not in labels(config(), version="0")
    creator = current_creator()
    assert creator.endswith(f":{os.getpid()}")
    assert labels(config(), version="0", creator=creator)[LABEL_CREATOR] == creator
    kwargs = container_create_kwargs(config(), version="0", name=None, creator=creator)
    assert kwargs["labels"][LABEL_CREATOR] == creator
