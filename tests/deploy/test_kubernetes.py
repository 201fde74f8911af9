"""The Kubernetes manifests are valid, build, and agree with the settings they ship and with lmsbridge.

Validation is offline: ``kubernetes-validate`` carries the Kubernetes JSON schemas in the package.
The kustomization is built with ``kubectl kustomize`` where kubectl is installed; everywhere, every
file it lists must exist and validate. KEDA's resources (an optional component) are custom resources
without a bundled schema: their shape is checked here against what KEDA's rabbitmq scaler reads.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lmsbridge.broker.topology import Names
from lmsbridge.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KEDA = KUBERNETES / "keda"
VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())  # oldest supported here, newest bundled
# Peak RSS measured in bench/RESULTS.md ("Memory"): requests must cover it.
PEAK_MIB = {"receiver": 105 * 1000**2 / 1024**2, "worker": 121 * 1000**2 / 1024**2}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return data


def _listed_files(folder: Path) -> list[Path]:
    k = _kustomization(folder)
    files = [folder / name for name in k.get("resources", [])]
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        files += [folder / name.split("=")[-1] for name in generator.get("files", []) + generator.get("envs", [])]
    return files


def _resources(folder: Path) -> list[dict[str, Any]]:
    return [doc for name in _kustomization(folder)["resources"] for doc in _load(folder / name)]


def _by_name(kind: str, name: str) -> dict[str, Any]:
    return next(r for r in _resources(KUBERNETES) if r["kind"] == kind and r["metadata"]["name"] == name)


def _container(name: str) -> dict[str, Any]:
    container: dict[str, Any] = _by_name("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return container


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def k8s_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod gets: the ConfigMap's lmsbridge.toml with the Secret's variables in its environment."""
    for key, value in _env_file(KUBERNETES / "secrets.env").items():
        monkeypatch.setenv(key, value)
    return load_settings(KUBERNETES / "lmsbridge.toml")


def test_every_listed_file_exists() -> None:
    """Every resource and generator file the kustomization and the KEDA component name is there."""
    for folder in (KUBERNETES, KEDA):
        for path in _listed_files(folder):
            assert path.is_file(), f"{folder / 'kustomization.yaml'} lists {path.name}, which is missing"


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    """Each object validates strictly (no unknown field) against the bundled schemas, oldest and newest."""
    resources = _resources(KUBERNETES)
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for resource in resources:
        for version in VERSIONS:
            kubernetes_validate.validate(resource, version, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    """The schema check can fail: an unknown field or a wrong type in a Deployment is refused."""
    deployment = _by_name("Deployment", "lmsbridge-receiver")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: the files are checked above")
def test_the_kustomization_builds_with_and_without_keda(tmp_path: Path) -> None:
    """`kubectl kustomize` builds the base (every object then validates) and an overlay with the KEDA component."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 2
    assert "ConfigMap" in kinds
    assert "Secret" in kinds
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    secret = next(d["metadata"]["name"] for d in docs if d["kind"] == "Secret")
    for d in docs:
        if d["kind"] == "Deployment":  # generated names (with their hash) are referenced
            assert d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"] == secret

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = Path("..") / Path(*[".."] * (len(overlay.parts) - 2)) / KUBERNETES.relative_to("/")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [str(base)], "components": [str(base / "keda")]})
    )
    built = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {"ScaledObject", "TriggerAuthentication"} <= {d["kind"] for d in docs}
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "lmsbridge-worker")
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    assert worker["spec"]["strategy"] == {"type": "Recreate"}  # not its strategy


def test_the_shipped_settings_load_and_fit_the_probes_and_grace_periods(k8s_settings: Settings) -> None:
    """ConfigMap + Secret make valid settings; ports, probes and grace periods match them."""
    s = k8s_settings
    receiver, worker = _container("lmsbridge-receiver"), _container("lmsbridge-worker")
    receiver_pod = _by_name("Deployment", "lmsbridge-receiver")["spec"]["template"]["spec"]
    worker_pod = _by_name("Deployment", "lmsbridge-worker")["spec"]["template"]["spec"]

    assert s.receiver.host == "0.0.0.0"  # reachable from the kubelet, for the worker's /metrics too
    assert receiver["ports"][0]["containerPort"] == s.receiver.port
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pause = int(receiver["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pause > 0
    assert receiver_pod["terminationGracePeriodSeconds"] > pause + s.receiver.shutdown_grace

    assert worker["ports"][0]["containerPort"] == s.worker.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["port"] == worker["ports"][0]["name"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker_pod["terminationGracePeriodSeconds"] > s.worker.drain_timeout

    # Several workers share the key's rate budget through one PostgreSQL database.
    assert _by_name("Deployment", "lmsbridge-worker")["spec"]["replicas"] > 1
    assert s.database_url.get_secret_value().startswith("postgresql")  # several workers share it


def test_workers_are_replaced_all_at_once_and_receivers_one_by_one() -> None:
    """The worker Deployment's strategy is Recreate: a new version stops every old worker before the
    first new one starts and migrates the schema (an old worker consuming on the migrated schema
    failed every event after 0002, and split people after 0005). The receivers, which store no
    records, keep a rolling update that never takes a serving pod away before its successor is up."""
    worker = _by_name("Deployment", "lmsbridge-worker")["spec"]
    assert worker["strategy"] == {"type": "Recreate"}
    receiver = _by_name("Deployment", "lmsbridge-receiver")["spec"]["strategy"]
    assert receiver["type"] == "RollingUpdate"
    assert receiver["rollingUpdate"]["maxUnavailable"] == 0


def test_resources_cover_the_measured_memory_and_the_budgets_protect_both_roles() -> None:
    """Memory requests cover the measured peaks; each role has a PodDisruptionBudget; the receiver an HPA."""
    for role, peak in PEAK_MIB.items():
        resources = _container(f"lmsbridge-{role}")["resources"]
        request = int(resources["requests"]["memory"].removesuffix("Mi"))
        limit = int(resources["limits"]["memory"].removesuffix("Mi"))
        assert peak < request < limit, role
    selectors = {
        tuple(sorted(r["spec"]["selector"]["matchLabels"].items()))
        for r in _resources(KUBERNETES)
        if r["kind"] == "PodDisruptionBudget"
    }
    for role in ("receiver", "worker"):
        labels = _by_name("Deployment", f"lmsbridge-{role}")["spec"]["selector"]["matchLabels"]
        assert tuple(sorted(labels.items())) in selectors, role
    hpa = _by_name("HorizontalPodAutoscaler", "lmsbridge-receiver")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lmsbridge-receiver"
    assert "replicas" not in _by_name("Deployment", "lmsbridge-receiver")["spec"]  # the HPA owns the count


def test_the_keda_component_scales_the_worker_on_the_work_queues(k8s_settings: Settings) -> None:
    """The optional ScaledObject targets the worker, and its queue pattern takes intake and sync queues only."""
    import re

    assert _kustomization(KEDA)["kind"] == "Component"
    assert "keda" not in str(_kustomization(KUBERNETES))  # not in the default build
    docs = {d["kind"]: d for d in _resources(KEDA)}
    scaled, auth = docs["ScaledObject"], docs["TriggerAuthentication"]
    assert scaled["apiVersion"] == auth["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "lmsbridge-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    meta = trigger["metadata"]
    assert set(meta) <= {"protocol", "mode", "value", "useRegex", "operation", "queueName", "vhostName"}
    assert (meta["protocol"], meta["mode"], meta["useRegex"], meta["operation"]) == (
        "http",
        "QueueLength",
        "true",
        "sum",
    )
    assert all(isinstance(v, str) for v in meta.values())  # KEDA's metadata is a map of strings
    assert int(meta["value"]) > 0
    assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == {"host"}
    assert _env_file(KEDA / "keda.env")["host"].startswith("http")

    names = Names(k8s_settings.broker.prefix)
    pattern = re.compile(meta["queueName"])
    for account in ("acc-1", "replace-with-linked-account-id"):
        assert pattern.search(names.sync(account))
    for source in k8s_settings.sources:
        assert pattern.search(names.intake(source))
    for other in (names.dead, names.delay(0), names.delay(5)):
        assert not pattern.search(other), other
