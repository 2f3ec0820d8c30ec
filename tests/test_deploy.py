"""deploy/: the Kustomize base and overlay render to objects that the Kubernetes API schemas accept, hang
together (selectors, ports, Secrets by reference) and configure settings the app has."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from graphql_api.config import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BASE, OVERLAY = DEPLOY / "base", DEPLOY / "overlays" / "external"
# Schemas of the oldest Kubernetes still commonly run and of the newest kubernetes-validate ships.
VERSIONS = ["1.29.0", "1.37.0"]
# Kinds of CRDs (no schema in kubernetes-validate): checked by hand below.
CUSTOM = {"ServiceMonitor"}
Obj = dict[str, Any]


def _load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(into: Any, patch: Any) -> Any:
    """A strategic merge patch as Kustomize applies ours: maps merge, lists of named items merge by name
    (containers, env, volumes, ports), other lists and values are replaced."""
    if isinstance(into, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            into[key] = _merge(into[key], value) if key in into else value
        return into
    named = isinstance(into, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in [*into, *patch]):
        by_name = {item["name"]: item for item in into}
        for item in patch:
            if item["name"] in by_name:
                _merge(by_name[item["name"]], item)
            else:
                into.append(item)
        return into
    return patch


def render(directory: Path) -> list[Obj]:
    """What `kubectl kustomize directory` gives, for the features our kustomizations use (any other
    field fails here rather than being ignored)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(spec) <= {"apiVersion", "kind", "resources", "patches", "namespace", "images"}, set(spec)
    objects: list[Obj] = []
    for resource in spec["resources"]:
        path = directory / resource
        objects += render(path) if path.is_dir() else _load(path)
    for patch_ref in spec.get("patches", []):
        for patch in _load(directory / patch_ref["path"]):
            (target,) = [o for o in objects if _key(o) == _key(patch)]
            _merge(target, copy.deepcopy(patch))
    for obj in objects:
        if "namespace" in spec:
            obj["metadata"]["namespace"] = spec["namespace"]
        for container in _containers(obj):
            for image in spec.get("images", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return objects


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _containers(obj: Obj) -> list[Obj]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


def _one(objects: list[Obj], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(BASE if request.param == "base" else OVERLAY)


def test_every_object_matches_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    """Each rendered object of the base and the overlay validates (strict: no unknown field) against the
    API schemas of Kubernetes 1.29 and 1.37, offline."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="install requirements/dev.txt")
    for obj in rendered:
        if obj["kind"] in CUSTOM:
            continue
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_overlay_adds_ingress_and_service_monitor() -> None:
    """The overlay holds the base's objects plus the Ingress and the ServiceMonitor; the schema checks
    catch a broken patch, and a broken manifest fails validation (the validator is not a no-op)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="install requirements/dev.txt")
    base, overlay = render(BASE), render(OVERLAY)
    assert {_key(o) for o in overlay} == {_key(o) for o in base} | {
        ("Ingress", "modelhub"),
        ("ServiceMonitor", "modelhub"),
    }
    broken = copy.deepcopy(_one(overlay, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_pods_are_probed_hardened_and_bounded(rendered: list[Obj]) -> None:
    """Readiness on /readyz, liveness on /healthz, requests and limits, non-root, a read-only root file
    system with writable emptyDirs for /tmp and the data dir, no Secret inlined (only referenced)."""
    deployment = _one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(app["resources"]["requests"]) and "memory" in app["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert app["securityContext"]["readOnlyRootFilesystem"] is True
    assert app["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = _one(rendered, "ConfigMap")["data"]
    for path in ("/tmp", config["MODELHUB_DATA_DIR"]):
        assert "emptyDir" in volumes[mounts[path]], path
    assert not [o for o in rendered if o["kind"] == "Secret"]
    secret_env = {e["name"] for e in app["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"MODELHUB_MONGO_URI", "MODELHUB_SIGNING_SECRET"} <= secret_env
    assert all("value" not in e for e in app["env"] if e["name"] in secret_env)


def test_the_objects_point_at_each_other(rendered: list[Obj]) -> None:
    """The Service, PodDisruptionBudget and ServiceMonitor select the Deployment's pods; the Service's
    port reaches the container's; the HPA scales the Deployment; the Ingress routes to the Service."""
    deployment = _one(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert _one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container_ports = {p["name"] for p in _containers(deployment)[0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    hpa = _one(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # with the PDB's minAvailable 1, a drain never empties it
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for obj in rendered:
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    assert backend["name"] == service["metadata"]["name"]
                    assert backend["port"]["name"] in service_ports
            annotations = obj["metadata"]["annotations"]
            assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
            assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
        if obj["kind"] == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
            assert {e["port"] for e in obj["spec"]["endpoints"]} <= service_ports
            assert {e["path"] for e in obj["spec"]["endpoints"]} == {"/metrics"}


def _setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(f"MODELHUB_{name.upper()}")
    return names


def test_the_environment_is_settings_the_app_reads(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every MODELHUB_ variable the manifests set is a setting of the app (no typo is silently ignored),
    and the ConfigMap's values parse as Settings."""
    deployment = _one(rendered, "Deployment")
    config = _one(rendered, "ConfigMap")["data"]
    names = set(config) | {e["name"] for e in _containers(deployment)[0]["env"]}
    unknown = {n for n in names if n.startswith("MODELHUB_")} - _setting_names()
    assert not unknown, unknown
    for key in list(os.environ):
        if key.startswith("MODELHUB_"):
            monkeypatch.delenv(key)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.storage_backend == "s3" and settings.auth == "token" and settings.port == 8000


@pytest.mark.process
@pytest.mark.external
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kustomize_renders_the_same(directory: Path) -> None:
    """Where kubectl is installed, its Kustomize renders exactly what the tests above checked."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=_key)
    assert theirs == sorted(render(directory), key=_key)
