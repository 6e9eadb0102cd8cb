"""The container image and the Kubernetes manifests stay deployable.

Every manifest is validated against the Kubernetes schemas of pinned versions
(kubernetes-validate), the overlay is rendered (by ``kubectl kustomize`` when it is
installed, and by a small JSON-patch renderer otherwise) and validated too, and the
profiles the ConfigMaps carry must load like any llmsim profile. The Dockerfile's
health check runs against a real server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmsim import __version__
from llmsim.settings.sources import load_settings

if TYPE_CHECKING:
    from conftest import RunningServer

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "lora-pool"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSIONS = ("1.31.0", "1.34.0")
POOL_LABEL = ("llmsim-pool", "lora-pool")


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization(directory: Path) -> dict[str, Any]:
    docs = load_yaml_documents(directory / "kustomization.yaml")
    assert len(docs) == 1
    assert docs[0]["kind"] == "Kustomization"
    return dict(docs[0])


def base_resources() -> list[dict[str, Any]]:
    return [
        doc for name in kustomization(BASE)["resources"] for doc in load_yaml_documents(BASE / name)
    ]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LLMSIM_", "VLLM_")) or name == "API_KEY":
            monkeypatch.delenv(name)


# -- a tiny renderer of the overlay (JSON patches only, as the overlay uses) ----------


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add``, ``replace`` and ``remove`` on objects (all the overlay needs)."""
    result = copy.deepcopy(doc)
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        target = result
        for part in parents:
            target = target[part]
        if operation["op"] == "remove":
            del target[last]
        elif operation["op"] == "replace":
            assert last in target, f"replace of a missing {operation['path']}"
            target[last] = operation["value"]
        else:
            assert operation["op"] == "add", operation
            target[last] = operation["value"]
    return result


def render_overlay() -> list[dict[str, Any]]:
    spec = kustomization(OVERLAY)
    assert spec["resources"] == ["../../base"]
    docs = base_resources()
    for patch in spec["patches"]:
        operations = load_yaml_documents(OVERLAY / patch["path"])[0]
        target = patch["target"]
        matches = [
            index
            for index, doc in enumerate(docs)
            if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]
        ]
        assert len(matches) == 1, f"patch {patch['path']} targets no single base resource"
        docs[matches[0]] = apply_json_patch(docs[matches[0]], operations)
    return docs


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def profile_of(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The settings the pods would run with: the ConfigMap's profile through load_settings."""
    configmap = by_kind(docs, "ConfigMap")
    path = tmp_path / "profile.toml"
    path.write_text(configmap["data"]["profile.toml"], encoding="utf-8")
    return load_settings({"config": str(path)}).settings


# -- kustomizations -----------------------------------------------------------------


def test_base_kustomization_lists_every_manifest_and_only_existing_ones() -> None:
    listed = kustomization(BASE)["resources"]
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert {doc["kind"] for doc in base_resources()} == {"ConfigMap", "Deployment", "Service"}


def test_overlay_lists_existing_files_and_patches_resources_of_the_base() -> None:
    spec = kustomization(OVERLAY)
    for resource in spec["resources"]:
        assert (OVERLAY / resource / "kustomization.yaml").is_file()
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in base_resources()}
    patched = set()
    for patch in spec["patches"]:
        assert (OVERLAY / patch["path"]).is_file()
        patched.add((patch["target"]["kind"], patch["target"]["name"]))
    assert patched <= names
    on_disk = {p.name for p in OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == {patch["path"] for patch in spec["patches"]}


# -- schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_base_manifests_match_the_kubernetes_schemas(version: str) -> None:
    for doc in base_resources():
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_overlay_matches_the_kubernetes_schemas(version: str) -> None:
    for doc in render_overlay():
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_broken_manifest() -> None:
    deployment = copy.deepcopy(by_kind(base_resources(), "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "lora-pool"])
def test_kubectl_kustomize_renders_what_is_validated(directory: Path) -> None:
    rendered = kubectl_kustomize(directory)
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    expected = base_resources() if directory == BASE else render_overlay()
    key: Callable[[dict[str, Any]], str] = lambda doc: doc["kind"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)


# -- what the manifests promise -----------------------------------------------------


def test_deployment_probes_metrics_and_security() -> None:
    docs = base_resources()
    deployment, service = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    port = container["ports"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/health/ready",
        "port": port["name"],
    }
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    downward = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert env["LLMSIM_HOST"] == "0.0.0.0"
    assert env["LLMSIM_PORT"] == str(port["containerPort"])
    mount = container["volumeMounts"][0]
    assert env["LLMSIM_CONFIG"] == mount["mountPath"] + "/profile.toml"
    assert (
        pod["spec"]["volumes"][0]["configMap"]["name"]
        == by_kind(docs, "ConfigMap")["metadata"]["name"]
    )
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["image"] == f"llmsim:{__version__}"
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_base_profile_loads(tmp_path: Path) -> None:
    settings = profile_of(base_resources(), tmp_path)
    assert settings.model_label == "llama-3.1-8b"
    assert settings.startup_duration > 0
    grace = by_kind(base_resources(), "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert settings.shutdown_timeout < grace


def test_the_lora_pool_overlay_serves_adapters_on_labelled_pods(tmp_path: Path) -> None:
    docs = render_overlay()
    settings = profile_of(docs, tmp_path)
    assert len(settings.adapters) == 4
    assert settings.max_loras == 2
    deployment = by_kind(docs, "Deployment")
    assert (
        deployment["spec"]["replicas"] > by_kind(base_resources(), "Deployment")["spec"]["replicas"]
    )
    key, value = POOL_LABEL
    assert deployment["spec"]["template"]["metadata"]["labels"][key] == value


# -- the container image ------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_llmsim_as_a_non_root_user_on_all_interfaces() -> None:
    steps = dockerfile_instructions()
    kinds = [kind for kind, _ in steps]
    assert steps[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.1[0-9]-slim", steps[0][1])
    user = next(value for kind, value in steps if kind == "USER")
    assert user.split(":")[0] not in ("0", "root")
    env = " ".join(value for kind, value in steps if kind == "ENV")
    assert "LLMSIM_HOST=0.0.0.0" in env
    assert ("EXPOSE", "8000") in steps
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["vllm", "serve"], "vllm-openai's own"
    assert "CMD" not in kinds, "like vllm-openai: arguments go straight to `vllm serve`"
    assert kinds.index("USER") > kinds.index("RUN"), "install as root, then drop privileges"
    run = next(value for kind, value in steps if kind == "RUN")
    assert "pip install --no-cache-dir" in run
    ignored = dockerignore()
    assert {"tests", ".git"} <= ignored
    for kind, value in steps:
        if kind == "COPY":
            for source in value.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not excluded(source, ignored), f"{source} is excluded by .dockerignore"


def dockerignore() -> set[str]:
    return {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }


def excluded(source: str, ignored: set[str]) -> bool:
    """Whether the build context leaves ``source`` out: it or a parent is listed, and no
    ``!`` line takes it (or a parent of it) back."""
    parts = Path(source).parts
    prefixes = {"/".join(parts[: index + 1]) for index in range(len(parts))}
    return bool(prefixes & ignored) and not {f"!{prefix}" for prefix in prefixes} & ignored


def test_the_dockerignore_reader_sees_exceptions() -> None:
    assert excluded("deploy/kubernetes", {"deploy", "!deploy/container"})
    assert not excluded("deploy/container", {"deploy", "!deploy/container"})
    assert excluded("tests", dockerignore())


def healthcheck_command() -> list[str]:
    value = next(value for kind, value in dockerfile_instructions() if kind == "HEALTHCHECK")
    command = json.loads(value[value.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *(image_path_to_repo(arg) for arg in command[1:])]


def image_path_to_repo(arg: str) -> str:
    """A path the Dockerfile copies ``deploy/container`` to, as that file in the checkout."""
    copied = next(
        value.split()
        for kind, value in dockerfile_instructions()
        if kind == "COPY" and "deploy/container" in value
    )
    return arg.replace(copied[-1], str(ROOT / copied[0]))


def test_dockerfile_healthcheck_passes_on_a_live_server_and_fails_without_one(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}

    def check(port: int) -> int:
        return subprocess.run(
            healthcheck_command(),
            env={**env, "LLMSIM_PORT": str(port)},
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    assert check(server.port) == 0
    port = server.port
    server.stop()
    assert check(port) != 0
