"""The manifests committed under deploy/kubernetes/: every engine times every GPTQ branch, default knobs.

Each `ENGINE/BRANCH/` directory is a kustomize base: `manifests.yaml` (also fine for `kubectl apply -f`) and a
`kustomization.yaml` naming it, so an overlay can change the namespace, replicas, image or anything else
without editing generated files.

`make kubernetes` writes them (scripts/render_kubernetes.py) and a test keeps them equal to what this module
renders, so the files in the repository always carry the launcher's current flags.
"""

from __future__ import annotations

from .._launcher.variants import GPTQVariant
from .kubernetes import ENGINES, Engine, KubernetesDeployment, SecretRef, render_yaml

__all__ = ["DEFAULT_API_KEY_SECRET", "committed_deployment", "rendered_files"]

# The committed manifests require an API key: a Service in a shared cluster should not answer anyone.
DEFAULT_API_KEY_SECRET = SecretRef(name="zephyr-tgi-api-key", key="api-key")
_HEADER = (
    "# Rendered by `make kubernetes` from zephyr_tgi/_deploy (the launcher's own flags) for engine {engine},\n"
    "# GPTQ branch {branch}. Do not edit: use a kustomize overlay of this directory, or render other knobs\n"
    "# with `zephyr-tgi deploy kubernetes`.\n"
)


def committed_deployment(engine: Engine, variant: GPTQVariant) -> KubernetesDeployment:
    """The settings one committed file is rendered from: two replicas, the API key from a Secret."""
    return KubernetesDeployment(
        engine=engine,
        variant=variant,
        replicas=2,
        api_key_secret=DEFAULT_API_KEY_SECRET,
    )


_KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - manifests.yaml
"""


def rendered_files() -> dict[str, str]:
    """Path under deploy/kubernetes/ -> file content, for every engine and branch."""
    files: dict[str, str] = {}
    for engine in ENGINES:
        for variant in GPTQVariant:
            header = _HEADER.format(engine=engine, branch=variant.value)
            base = f"{engine}/{variant.value}"
            files[f"{base}/manifests.yaml"] = header + render_yaml(committed_deployment(engine, variant))
            files[f"{base}/kustomization.yaml"] = header + _KUSTOMIZATION
    return files
