"""The Kubernetes manifests: valid against the Kubernetes schemas (offline), and they run what the launcher runs.

Schema validation uses kubernetes-validate, which ships the OpenAPI-derived JSON schemas of each Kubernetes
release in its wheel, so no cluster and no network are needed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import kubernetes_validate
import pytest

from zephyr_tgi import ConfigurationError
from zephyr_tgi._deploy.catalog import DEFAULT_API_KEY_SECRET, committed_deployment
from zephyr_tgi._deploy.kubernetes import (
    ENGINES,
    Engine,
    KubernetesDeployment,
    SecretRef,
    Toleration,
    render_manifests,
    render_yaml,
)
from zephyr_tgi._launcher.args import container_create_kwargs, make_config, tokenizer_config_archive
from zephyr_tgi._launcher.variants import GPTQVariant

# The oldest release still common in managed clusters and the newest the schemas cover.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Written out here, not read from the launcher: where each engine listens and keeps its cache.
PORTS = {"tgi": 80, "vllm": 8000, "sglang": 30000}
CACHE_MOUNTS = {"tgi": "/data", "vllm": "/root/.cache/huggingface", "sglang": "/root/.cache/huggingface"}
CASES = [(engine, variant) for engine in ENGINES for variant in GPTQVariant]
CASE_IDS = [f"{engine}-{variant.value}" for engine, variant in CASES]


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {document["kind"]: document for document in documents}
    assert len(kinds) == len(documents)
    return kinds


def container_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = by_kind(documents)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container["env"]}


# -- schemas ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "variant"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(
    engine: Engine, variant: GPTQVariant, version: str
) -> None:
    documents = render_manifests(committed_deployment(engine, variant))

    assert [document["kind"] for document in documents] == ["ConfigMap", "Deployment", "Service"]
    for document in documents:
        # strict: unknown fields (a misspelt key) fail too.
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_knob_still_validates(engine: Engine) -> None:
    settings = KubernetesDeployment(
        engine=engine,
        replicas=0,
        namespace="llm",
        name="zephyr-prod",
        tensor_parallel=2,
        data_parallel=1 if engine == "tgi" else 2,
        hf_token_secret=None,
        cache_claim="hf-cache",
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=(Toleration.parse("dedicated=llm:NoExecute"), Toleration.parse("nvidia.com/gpu:NoSchedule")),
        service_type="LoadBalancer",
        startup_timeout=3600,
    )

    for document in render_manifests(settings):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def test_a_broken_manifest_fails_the_validation() -> None:
    # The check has teeth: a misspelt field and a wrong type are both caught.
    deployment = by_kind(render_manifests(KubernetesDeployment()))["Deployment"]
    deployment["spec"]["replicas"] = "two"

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# -- the launcher's flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "variant"), CASES, ids=CASE_IDS)
def test_the_container_runs_what_the_docker_launcher_runs(engine: Engine, variant: GPTQVariant) -> None:
    # Without secrets the two must agree to the last argument: same image, entrypoint and command.
    container = container_of(render_manifests(KubernetesDeployment(engine=engine, variant=variant)))
    docker = container_create_kwargs(make_config(engine=engine, variant=variant, gpus=1), version="0", name=None)

    assert container["image"] == docker["image"]
    assert container["args"] == docker["command"]
    assert container.get("command") == docker.get("entrypoint")
    assert ["--revision", variant.value] == container["args"][container["args"].index("--revision") :][:2]


@pytest.mark.parametrize(
    ("engine", "flags"),
    [
        ("tgi", ["--num-shard", "2"]),
        ("vllm", ["--tensor-parallel-size", "2", "--data-parallel-size", "3"]),
        ("sglang", ["--tp-size", "2", "--dp-size", "3"]),
    ],
)
def test_parallelism_sets_the_engine_flags_and_the_gpu_count(engine: Engine, flags: list[str]) -> None:
    data_parallel = 1 if engine == "tgi" else 3
    container = container_of(
        render_manifests(KubernetesDeployment(engine=engine, tensor_parallel=2, data_parallel=data_parallel))
    )

    joined = " ".join(container["args"])
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        assert f"{name} {value}" in joined
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2 * data_parallel}


def test_one_gpu_per_pod_by_default() -> None:
    container = container_of(render_manifests(KubernetesDeployment()))

    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}


# -- probes, port, template, cache --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_the_probes_ask_health_on_the_port_the_server_listens_on(engine: Engine) -> None:
    documents = render_manifests(KubernetesDeployment(engine=engine, startup_timeout=2400))
    container = container_of(documents)

    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": PORTS[engine], "protocol": "TCP"}
    if engine != "tgi":  # TGI's image listens on its PORT variable, 80
        assert container["args"][container["args"].index("--port") + 1] == str(PORTS[engine])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2400
    (service_port,) = by_kind(documents)["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "http"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_template_configmap_is_mounted_where_the_arguments_point(engine: Engine) -> None:
    documents = render_manifests(KubernetesDeployment(engine=engine))
    kinds = by_kind(documents)
    container = container_of(documents)
    flag = "--tokenizer-config-path" if engine == "tgi" else "--chat-template"
    path = container["args"][container["args"].index(flag) + 1]

    volumes = {volume["name"]: volume for volume in kinds["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    file_name = path.removeprefix(mount["mountPath"] + "/")
    # The same bytes the Docker launcher copies into its container.
    archived = tokenizer_config_archive()
    assert kinds["ConfigMap"]["data"][file_name].encode() in archived


@pytest.mark.parametrize("engine", ENGINES)
def test_the_hugging_face_cache_is_on_a_volume_emptydir_or_claim(engine: Engine) -> None:
    def cache(**knobs: Any) -> tuple[dict[str, Any], str]:
        documents = render_manifests(KubernetesDeployment(engine=engine, **knobs))
        volumes = by_kind(documents)["Deployment"]["spec"]["template"]["spec"]["volumes"]
        mounts = {m["name"]: m["mountPath"] for m in container_of(documents)["volumeMounts"]}
        return next(v for v in volumes if v["name"] == "hf-cache"), mounts["hf-cache"]

    assert cache(cache_size="50Gi") == ({"name": "hf-cache", "emptyDir": {"sizeLimit": "50Gi"}}, CACHE_MOUNTS[engine])
    claim, _ = cache(cache_claim="shared-hf")
    assert claim == {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "shared-hf"}}


# -- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "variable"), [("tgi", "API_KEY"), ("vllm", "VLLM_API_KEY")])
def test_the_api_key_comes_from_the_secret_in_the_engines_variable(engine: Engine, variable: str) -> None:
    secret = SecretRef(name="llm-key", key="token")
    container = container_of(render_manifests(KubernetesDeployment(engine=engine, api_key_secret=secret)))

    assert env_of(container)[variable] == {
        "name": variable,
        "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "token", "optional": False}},
    }
    assert "--api-key" not in container["args"]


def test_sglangs_api_key_argument_is_expanded_from_the_secret_by_kubernetes() -> None:
    secret = SecretRef(name="llm-key", key="token")
    container = container_of(render_manifests(KubernetesDeployment(engine="sglang", api_key_secret=secret)))

    reference = container["args"][container["args"].index("--api-key") + 1]
    assert reference.startswith("$(")
    assert reference.endswith(")")
    variable = reference[2:-1]
    assert env_of(container)[variable]["valueFrom"] == {
        "secretKeyRef": {"name": "llm-key", "key": "token", "optional": False}
    }
    # Kubernetes expands $(VAR) only from variables defined before the reference is used: it is the first one.
    assert container["env"][0]["name"] == variable


@pytest.mark.parametrize("engine", ENGINES)
def test_no_api_key_secret_means_no_key_anywhere(engine: Engine) -> None:
    container = container_of(render_manifests(KubernetesDeployment(engine=engine)))

    assert "--api-key" not in container["args"]
    assert set(env_of(container)) == {"HF_TOKEN"}


@pytest.mark.parametrize("engine", ENGINES)
def test_the_hf_token_is_an_optional_secret_and_no_placeholder_leaks(engine: Engine) -> None:
    deployment = committed_deployment(engine, GPTQVariant.MAIN)
    container = container_of(render_manifests(deployment))

    assert env_of(container)["HF_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}
    }
    assert all("value" not in entry for entry in container["env"])  # every variable is a Secret reference
    assert "placeholder" not in render_yaml(deployment)
    assert deployment.api_key_secret == DEFAULT_API_KEY_SECRET


def test_without_an_hf_token_secret_there_is_no_hf_token_variable() -> None:
    container = container_of(render_manifests(KubernetesDeployment(hf_token_secret=None)))

    assert "HF_TOKEN" not in env_of(container)


# -- scheduling, service, rollout ---------------------------------------------------------------------------


def test_the_service_selects_the_pods_and_the_deployment_owns_them() -> None:
    kinds = by_kind(render_manifests(KubernetesDeployment(engine="vllm", replicas=3)))
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]

    assert kinds["Deployment"]["spec"]["replicas"] == 3
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["Service"]["metadata"]["name"] == "zephyr-vllm"  # never plain `vllm`: see enableServiceLinks
    assert kinds["Deployment"]["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_node_selector_and_tolerations_reach_the_pod() -> None:
    spec = by_kind(
        render_manifests(
            KubernetesDeployment(
                node_selector={"gpu": "a100"}, tolerations=(Toleration.parse("dedicated=llm:NoExecute"),)
            )
        )
    )["Deployment"]["spec"]["template"]["spec"]

    assert spec["nodeSelector"] == {"gpu": "a100"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoExecute"}]


def test_gpu_nodes_are_tolerated_by_default() -> None:
    spec = by_kind(render_manifests(KubernetesDeployment()))["Deployment"]["spec"]["template"]["spec"]

    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in spec


def test_another_branch_changes_the_pod_template_so_the_pods_roll() -> None:
    def template(variant: GPTQVariant) -> dict[str, Any]:
        deployment = by_kind(render_manifests(KubernetesDeployment(variant=variant)))["Deployment"]
        return dict(deployment["spec"]["template"]["metadata"])

    main, eight_bit = template(GPTQVariant.MAIN), template(GPTQVariant.BITS8_GROUP128)
    assert main["annotations"]["zephyr-tgi/args-hash"] != eight_bit["annotations"]["zephyr-tgi/args-hash"]
    assert eight_bit["labels"]["zephyr-tgi/variant"] == "gptq-8bit-128g-actorder_True"


def test_the_namespace_is_set_on_every_object() -> None:
    documents = render_manifests({"namespace": "llm"})

    assert {document["metadata"].get("namespace") for document in documents} == {"llm"}


# -- refusals before anything is rendered -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "tgi", "data_parallel": 2}, "TGI has no data parallelism"),
        ({"variant": "gptq-3bit"}, "unknown GPTQ variant 'gptq-3bit'"),
        ({"name": "Zephyr_TGI"}, "lower-case DNS label"),
        ({"replicas": -1}, "replicas"),
        ({"max_input_tokens": 4096}, "must be < max_total_tokens"),
        ({"cache_size": "30GB"}, "cache_size"),
    ],
)
def test_bad_settings_are_a_configuration_error(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_manifests(settings)


def test_extra_arguments_reach_the_server_and_managed_flags_are_refused() -> None:
    container = container_of(render_manifests({"engine": "vllm", "extra_args": ("--max-num-seqs", "64")}))

    assert container["args"][-2:] == ["--max-num-seqs", "64"]
    with pytest.raises(ConfigurationError, match="extra_args must not contain --revision"):
        render_manifests({"extra_args": ("--revision", "main")})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llm-key", SecretRef(name="llm-key", key="api-key")),
        ("llm-key:token", SecretRef(name="llm-key", key="token")),
    ],
)
def test_secret_references_parse(text: str, expected: SecretRef) -> None:
    assert SecretRef.parse(text, default_key="api-key") == expected


@pytest.mark.parametrize("text", ["", ":key", "Upper:key", "name:bad/key"])
def test_bad_secret_references_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="NAME or NAME:KEY"):
        SecretRef.parse(text, default_key="api-key")


@pytest.mark.parametrize("text", ["nvidia.com/gpu", "key:Sometimes", ":NoSchedule"])
def test_bad_tolerations_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="KEY\\[=VALUE\\]:EFFECT"):
        Toleration.parse(text)


# -- a StatefulSet: stable names for the client's own balancing ---------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_statefulset_with_claims_per_pod_validates(engine: Engine, version: str) -> None:
    settings = KubernetesDeployment(engine=engine, workload="StatefulSet", replicas=2, cache_per_pod="40Gi")

    documents = render_manifests(settings)

    assert [d["kind"] for d in documents] == ["ConfigMap", "StatefulSet", "Service", "Service"]
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_statefulset_names_its_pods_through_a_headless_service() -> None:
    settings = KubernetesDeployment(engine="vllm", workload="StatefulSet", replicas=2, namespace="llm")
    config_map, stateful_set, service, pods = render_manifests(settings)

    assert stateful_set["spec"]["serviceName"] == pods["metadata"]["name"] == "zephyr-vllm-pods"
    assert pods["spec"]["clusterIP"] == "None"
    assert pods["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert pods["spec"]["selector"] == service["spec"]["selector"]
    assert settings.replica_urls() == [
        "http://zephyr-vllm-0.zephyr-vllm-pods.llm.svc:8000",
        "http://zephyr-vllm-1.zephyr-vllm-pods.llm.svc:8000",
    ]
    assert config_map["kind"] == "ConfigMap"


def test_a_claim_per_pod_replaces_the_emptydir_cache() -> None:
    stateful_set = render_manifests(KubernetesDeployment(workload="StatefulSet", cache_per_pod="40Gi"))[1]

    volumes = {volume["name"] for volume in stateful_set["spec"]["template"]["spec"]["volumes"]}
    (claim,) = stateful_set["spec"]["volumeClaimTemplates"]
    assert "hf-cache" not in volumes
    assert claim["metadata"]["name"] == "hf-cache"
    assert claim["spec"]["resources"]["requests"] == {"storage": "40Gi"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cache_per_pod": "40Gi"}, "a cache claim per pod needs the StatefulSet workload"),
        ({"workload": "StatefulSet", "cache_per_pod": "4Gi", "cache_claim": "hf"}, "not both"),
    ],
)
def test_cache_per_pod_needs_a_statefulset_and_no_shared_claim(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_manifests(settings)


def test_a_deployments_pods_have_no_urls_of_their_own() -> None:
    with pytest.raises(ConfigurationError, match="only a StatefulSet"):
        KubernetesDeployment().replica_urls()


# -- rules the API server checks that the JSON schemas do not -----------------------------------------------

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")


def all_labels(document: dict[str, Any]) -> dict[str, str]:
    found = dict(document["metadata"].get("labels", {}))
    template = document.get("spec", {}).get("template")
    if template is not None:
        found |= template["metadata"]["labels"]
    return found


@pytest.mark.parametrize("workload", ["Deployment", "StatefulSet"])
@pytest.mark.parametrize(("engine", "variant"), CASES, ids=CASE_IDS)
def test_names_labels_and_ports_follow_the_api_servers_rules(
    engine: Engine, variant: GPTQVariant, workload: Literal["Deployment", "StatefulSet"]
) -> None:
    # The longest name allowed: the ConfigMap's "-chat-template" suffix brings it to 63 characters.
    documents = render_manifests(KubernetesDeployment(engine=engine, variant=variant, workload=workload, name="a" * 49))

    for document in documents:
        assert DNS_LABEL.fullmatch(document["metadata"]["name"]), document["metadata"]["name"]
        for value in all_labels(document).values():
            assert LABEL_VALUE.fullmatch(value), value
        for port in document.get("spec", {}).get("ports", []):
            assert PORT_NAME.fullmatch(port["name"])
    (container,) = documents[1]["spec"]["template"]["spec"]["containers"]
    assert DNS_LABEL.fullmatch(container["name"])
    assert all(PORT_NAME.fullmatch(port["name"]) for port in container["ports"])
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", entry["name"]) for entry in container["env"])
