"""deploy/k8s offline: yamllint, rendering, Kubernetes schemas at a pinned version, vendored CRD schemas, and
the settings that must agree across objects (probes vs drain grace, selectors, ports, writable paths)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import kustomize

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"

# The oldest Kubernetes release still in upstream support when this was written; the manifests use nothing
# newer (preStop exec, appProtocol, policy/v1 PDB are all older).
K8S_VERSION = "1.33.0"
CRD_SCHEMAS = {"ScaledObject": SCHEMAS / "keda.sh_scaledobject_v1alpha1.json",
               "ServiceMonitor": SCHEMAS / "monitoring.coreos.com_servicemonitor_v1.json"}


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` installs the dev extras")
    return found


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return kustomize.render(K8S / "overlays" / "gpu")


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize.render(K8S / "base")


# -- lint and schemas --------------------------------------------------------------------------------------

def yamllint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("yamllint"), "--strict", "-c", str(K8S / ".yamllint.yaml"), *map(str, paths)],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_yamllint_passes() -> None:
    proc = yamllint(K8S)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_yamllint_rejects_a_duplicate_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata:\n  name: a\n  name: b\n")
    proc = yamllint(broken)
    assert proc.returncode != 0 and "duplicate" in proc.stdout


@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_core_objects_validate_strictly(overlay: str, base: list[dict[str, Any]], gpu: list[dict[str, Any]]) -> None:
    objects = [obj for obj in (base if overlay == "base" else gpu) if obj["kind"] not in CRD_SCHEMAS]
    assert {obj["kind"] for obj in objects} == {"Deployment", "Service", "PodDisruptionBudget",
                                                "PersistentVolumeClaim"}
    extras = [doc for path in (K8S / "extras").glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())]
    for obj in [*objects, *extras]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_broken_deployment(gpu: list[dict[str, Any]]) -> None:
    deployment = by_kind(gpu, "Deployment")
    broken = kustomize.strategic_merge(deployment, {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "ports": [{"containerPort": "eight thousand", "name": "http"}]}]}}}})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = kustomize.strategic_merge(deployment, {"spec": {"template": {"spec": {"terminationGrace": 5}}}})
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: unknown fields are errors
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def check_jsonschema(kind: str, obj: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    document = tmp_path / f"{kind}.yaml"
    document.write_text(yaml.safe_dump(obj))
    return subprocess.run([tool("check-jsonschema"), "--schemafile", str(CRD_SCHEMAS[kind]), str(document)],
                          capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CRD_SCHEMAS))
def test_custom_resources_match_vendored_crd_schemas(kind: str, gpu: list[dict[str, Any]], tmp_path: Path) -> None:
    proc = check_jsonschema(kind, by_kind(gpu, kind), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "patch"), [
    ("ScaledObject", {"spec": {"triggers": []}}),                                  # minItems 1
    ("ScaledObject", {"spec": {"pollingInterval": "15s"}}),                        # an integer
    ("ScaledObject", {"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
        "scaleDown": {"stabilisationWindowSeconds": 300}}}}}}),                    # misspelt: unknown field
    ("ServiceMonitor", {"spec": {"endpoints": [{"port": "http", "interval": "10 seconds"}]}}),
    ("ServiceMonitor", {"spec": {"selector": None}}),
])
def test_crd_schemas_reject_broken_objects(kind: str, patch: dict[str, Any], gpu: list[dict[str, Any]],
                                           tmp_path: Path) -> None:
    broken = kustomize.strategic_merge(by_kind(gpu, kind), patch)
    assert check_jsonschema(kind, broken, tmp_path).returncode != 0


# -- rendering ---------------------------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "kustomize-gpu.yaml"
"""`kubectl kustomize deploy/k8s/overlays/gpu` (kubectl 1.32, kustomize v5.5.0), recorded. Regenerate it with
that command whenever the manifests change; no registry here ships a current kubectl, so CI compares the
renderer against this recording (and against kubectl itself wherever one is installed)."""


def _by_key(objects: Any) -> dict[tuple[str, str], Any]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


@pytest.mark.slow
def test_renderer_matches_kubectl_kustomize(gpu: list[dict[str, Any]]) -> None:
    assert _by_key(gpu) == _by_key(yaml.safe_load_all(GOLDEN.read_text()))
    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # the recording is still what kubectl renders
        proc = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / "gpu")], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        assert _by_key(yaml.safe_load_all(proc.stdout)) == _by_key(gpu)


def test_renderer_merges_lists_by_key_and_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    base = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}, {"name": "b"}],
                     "tolerations": [{"key": "old"}]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "2"}, {"name": "Y"}]}],
                      "tolerations": [{"key": "new"}]}}
    merged = kustomize.strategic_merge(base, patch)
    assert merged["spec"]["containers"] == [{"name": "a", "env": [{"name": "Y"}, {"name": "X", "value": "2"}]},
                                            {"name": "b"}]
    assert merged["spec"]["tolerations"] == [{"key": "new"}]  # no merge key: replaced whole
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(kustomize.KustomizeError, match="configMapGenerator"):
        kustomize.render(tmp_path)


def test_images_namespace_and_labels_are_applied(gpu: list[dict[str, Any]]) -> None:
    assert {obj["metadata"].get("namespace") for obj in gpu} == {"tts"}
    assert all(obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "f5tts" for obj in gpu)
    (container,) = by_kind(gpu, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/f5tts-runpod:0.1.0-baked"
    assert kustomize._split_image("host:5000/repo:tag") == ("host:5000/repo", ":tag")
    assert kustomize._split_image("host:5000/repo") == ("host:5000/repo", "")


# -- what must agree across objects ------------------------------------------------------------------------

def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_drain_fits_in_the_termination_grace(gpu: list[dict[str, Any]]) -> None:
    pod = by_kind(gpu, "Deployment")["spec"]["template"]["spec"]
    container = server_container(gpu)
    assert "preStop" not in container.get("lifecycle", {})  # the server's drain delay does its job
    env = env_of(container)
    delay, grace = float(env["TTS_DRAIN_DELAY_S"]), float(env["TTS_SHUTDOWN_GRACE_S"])
    assert delay >= 5  # endpoint and ingress updates take seconds to reach every proxy
    assert pod["terminationGracePeriodSeconds"] > delay + grace


def test_probes_follow_the_server_contract(gpu: list[dict[str, Any]]) -> None:
    container = server_container(gpu)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    # The port opens only after load + warm-up: the budget must cover a full-size model's cold start.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    ports = {port["name"] for port in container["ports"]}
    assert {probe["httpGet"]["port"] for probe in (startup, container["readinessProbe"],
                                                   container["livenessProbe"])} <= ports


def test_non_root_read_only_and_every_cache_on_a_writable_volume(gpu: list[dict[str, Any]]) -> None:
    pod = by_kind(gpu, "Deployment")["spec"]["template"]["spec"]
    container = server_container(gpu)
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert not container["securityContext"]["allowPrivilegeEscalation"]
    mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
    assert "/tmp" in mounts
    env = env_of(container)
    writable = ["TTS_VOICES_DIR", "HF_HOME", "XDG_CACHE_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR", "TRITON_CACHE_DIR"]
    for name in writable:
        assert any(env[name].startswith(mount + "/") for mount in mounts), f"{name}={env[name]} is read-only"
    voices = next(v for v in pod["volumes"] if v["name"] == "voices")["persistentVolumeClaim"]["claimName"]
    pvc = by_kind(gpu, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == voices and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_only_in_the_overlay(base: list[dict[str, Any]], gpu: list[dict[str, Any]]) -> None:
    assert "nvidia.com/gpu" not in str(server_container(base)["resources"])
    resources = server_container(gpu)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert env_of(server_container(gpu))["TTS_DEVICE"] == "cuda"


def test_env_names_are_server_settings(gpu: list[dict[str, Any]]) -> None:
    from server.core.settings import Settings

    known = {"TTS_" + field.name.upper() for field in dataclasses.fields(Settings)}
    start_sh = {"TTS_MODE", "TTS_VOLUME_PATH"}  # read by deploy/runpod/start.sh, not by the server
    tts_env = {name for name in env_of(server_container(gpu)) if name.startswith("TTS_")}
    assert tts_env - start_sh <= known, tts_env - start_sh - known
    assert env_of(server_container(gpu))["TTS_MODE"] == "server"


def selected_by(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_selectors_names_and_ports_agree(gpu: list[dict[str, Any]]) -> None:
    deployment, service = by_kind(gpu, "Deployment"), by_kind(gpu, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selected_by(service["spec"]["selector"], pod_labels)
    assert selected_by(by_kind(gpu, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert selected_by(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    container_ports = {port["name"] for port in server_container(gpu)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    monitor = by_kind(gpu, "ServiceMonitor")
    assert selected_by(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {ep["port"] for ep in monitor["spec"]["endpoints"]} <= {port["name"] for port in service["spec"]["ports"]}
    # A Service named "tts" would inject TTS_PORT=tcp://... into pods that keep service links.
    assert service["metadata"]["name"] != "tts"
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert service["spec"]["sessionAffinity"] == "None"


def test_scaled_object_scales_the_deployment_on_queued_plus_inflight(gpu: list[dict[str, Any]]) -> None:
    scaled = by_kind(gpu, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == by_kind(gpu, "Deployment")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]  # the CRD's CEL rule, and no scale to 0
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300  # warm replicas are kept through lulls
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    assert "tts_queue_depth" in query and "tts_inflight_requests" in query
    namespace = by_kind(gpu, "Deployment")["metadata"]["namespace"]
    assert set(re.findall(r'namespace="([^"]+)"', query)) == {namespace}
    # docs/scaling.md explains how the threshold was chosen; it must be the one deployed.
    doc = (ROOT / "docs" / "scaling.md").read_text()
    assert f'threshold: "{trigger["metadata"]["threshold"]}"' in doc
    assert f"maxReplicaCount: {scaled['maxReplicaCount']}" in doc
