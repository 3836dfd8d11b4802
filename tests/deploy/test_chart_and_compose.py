"""docker-compose.yml and the Helm chart run the same processes with the same settings.

Both give each service's processes environment variables; a setting added to one and not the
other (or misspelt in either) would make the laptop and the cluster behave differently, so
these tests compare the names per service and check each one against the service's settings
class. They also check what the schemas cannot: that the chart's objects point at each other
(selectors, ConfigMaps, autoscaler targets) and that compose's dependencies exist. The chart
is rendered with the helm that tools/deploy-check.sh builds.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from backhaul_kit.config import ServiceSettings

yaml = pytest.importorskip(
    "yaml", reason="pyyaml is needed to read the deploy files (kubernetes-validate brings it)"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "backhaul"
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = ("accounts", "billing", "scheduler", "provisioning", "notifications")
SECRET_SETTINGS = {"DATABASE_URL", "JWT_SECRET", "KAFKA_SASL_PASSWORD", "SMTP_PASSWORD"}
# What the production-like values add to the plaintext defaults compose shares.
SECURITY_SETTINGS = {
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
}
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))

Manifest = dict[str, Any]


def _helm() -> str | None:
    for candidate in (os.environ.get("HELM"), str(ROOT / ".cache" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


@pytest.fixture(scope="module")
def helm() -> str:
    binary = _helm()
    if binary is None:
        pytest.skip("helm is absent: tools/deploy-check.sh builds it into .cache/bin/helm")
    return binary


@cache
def _render(helm: str, *args: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        [helm, "template", "backhaul", str(CHART), "--namespace", "backhaul", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _render_error(helm: str, *args: str) -> str:
    result = subprocess.run(
        [helm, "template", "backhaul", str(CHART), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return result.stderr


def _objects(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _container_env(manifests: tuple[Manifest, ...], pod_spec: Manifest) -> dict[str, Manifest]:
    """Every environment variable of the pod's one container: name -> its env entry."""
    (container,) = pod_spec["containers"]
    config_maps = _objects(manifests, "ConfigMap")
    names: dict[str, Manifest] = {}
    for source in container.get("envFrom", []):
        data = config_maps[source["configMapRef"]["name"]]["data"]
        names.update({key: {"name": key, "value": value} for key, value in data.items()})
    names.update({entry["name"]: entry for entry in container.get("env", [])})
    return names


def _chart_processes(manifests: tuple[Manifest, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """(service, api|worker|migrate) -> {"args": [...], "env": {name: entry}}."""
    processes = {}
    for kind in ("Deployment", "Job"):
        for obj in _objects(manifests, kind).values():
            labels = obj["metadata"]["labels"]
            key = (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"])
            pod = obj["spec"]["template"]["spec"]
            processes[key] = {
                "args": pod["containers"][0]["args"],
                "env": _container_env(manifests, pod),
            }
    return processes


def _autoscaled(manifests: tuple[Manifest, ...]) -> set[str]:
    """The Deployments a HorizontalPodAutoscaler scales."""
    autoscalers = _objects(manifests, "HorizontalPodAutoscaler").values()
    return {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers}


@cache
def _compose() -> Manifest:
    with COMPOSE.open() as f:
        return yaml.safe_load(f)


def _compose_env(process: str) -> set[str]:
    return set(_compose()["services"][process]["environment"])


@cache
def _known_settings(service: str) -> set[str]:
    """The environment variable names the service's settings class reads."""
    module = importlib.import_module(f"{service}.config")
    (settings,) = {
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    }
    return {name.upper() for name in settings.model_fields}


# -- compose ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_compose_runs_migrations_then_api_and_worker(service: str) -> None:
    services = _compose()["services"]
    assert services[f"{service}-migrate"]["command"] == [service, "migrate"]
    for role in ("api", "worker"):
        process = services[f"{service}-{role}"]
        assert process["command"] == [service, "serve", "--role", role]
        assert process["depends_on"][f"{service}-migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert process["environment"] == services[f"{service}-migrate"]["environment"]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_settings_are_the_services_own(service: str) -> None:
    unknown = _compose_env(f"{service}-api") - _known_settings(service)
    assert not unknown, f"{service} has no such settings: {sorted(unknown)}"


# -- the chart -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_chart_settings_are_the_services_own(helm: str, values: Path) -> None:
    processes = _chart_processes(_render(helm, "--values", str(values)))
    assert {service for service, _ in processes} == set(SERVICES)
    for (service, role), process in processes.items():
        unknown = set(process["env"]) - _known_settings(service)
        assert not unknown, f"{service} {role} has no such settings: {sorted(unknown)}"


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_chart_reads_secrets_from_existing_secrets_only(helm: str, values: Path) -> None:
    manifests = _render(helm, "--values", str(values))
    assert not _objects(manifests, "Secret"), "the chart must not carry secrets"
    for config_map in _objects(manifests, "ConfigMap").values():
        assert not SECRET_SETTINGS & set(config_map["data"])
    for (service, role), process in _chart_processes(manifests).items():
        for name in SECRET_SETTINGS & set(process["env"]):
            entry = process["env"][name]
            assert "secretKeyRef" in entry.get("valueFrom", {}), f"{service} {role}: {name}"


def test_compose_and_chart_defaults_have_the_same_settings(helm: str) -> None:
    processes = _chart_processes(_render(helm, "--values", str(CHART / "ci/default-values.yaml")))
    for service in SERVICES:
        for role in ("api", "worker", "migrate"):
            chart = set(processes[(service, role)]["env"])
            compose = _compose_env(f"{service}-{role}")
            assert chart == compose, (
                f"{service} {role}: only in the chart {sorted(chart - compose)}, "
                f"only in compose {sorted(compose - chart)}"
            )


def test_production_values_add_security_settings_only(helm: str) -> None:
    values = CHART / "ci/production-values.yaml"
    with values.open() as f:
        production = yaml.safe_load(f)
    extra = set(production["config"]["extra"])
    processes = _chart_processes(_render(helm, "--values", str(values)))
    for (service, role), process in processes.items():
        own = set(production["services"].get(service, {}).get("config", {}))
        chart = set(process["env"])
        compose = _compose_env(f"{service}-{role}")
        assert compose <= chart, f"{service} {role} lacks {sorted(compose - chart)}"
        assert chart - compose <= SECURITY_SETTINGS | extra | own, (service, role)
        assert {"KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE"} <= chart


def test_chart_runs_the_same_commands_as_compose(helm: str) -> None:
    processes = _chart_processes(_render(helm, "--values", str(CHART / "ci/default-values.yaml")))
    services = _compose()["services"]
    for (service, role), process in processes.items():
        assert process["args"] == services[f"{service}-{role}"]["command"]


def test_migrations_run_as_a_hook_before_install_and_upgrade(helm: str) -> None:
    manifests = _render(helm, "--values", str(CHART / "ci/default-values.yaml"))
    jobs = _objects(manifests, "Job")
    assert len(jobs) == len(SERVICES)
    for job in jobs.values():
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert set(hooks) == {"pre-install", "pre-upgrade"}
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][1:] == ["migrate"]


def test_every_api_scales_and_every_pod_is_locked_down(helm: str) -> None:
    manifests = _render(helm, "--values", str(CHART / "ci/default-values.yaml"))
    deployments = _objects(manifests, "Deployment")
    assert len(deployments) == 2 * len(SERVICES)
    scaled = _autoscaled(manifests)
    assert scaled == {name for name in deployments if name.endswith("-api")}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["limits"], name
    policies = _objects(manifests, "NetworkPolicy")
    assert set(deployments) <= set(policies)


def test_a_service_can_be_left_out_and_tuned_alone(helm: str) -> None:
    manifests = _render(
        helm,
        "--set", "services.scheduler.enabled=false",
        "--set", "services.billing.api.autoscaling.enabled=false",
        "--set", "services.billing.api.replicas=4",
    )  # fmt: skip
    names = {m["metadata"]["name"] for m in manifests}
    assert not any("scheduler" in name for name in names)
    deployments = _objects(manifests, "Deployment")
    assert deployments["backhaul-billing-api"]["spec"]["replicas"] == 4
    scaled = _autoscaled(manifests)
    assert "backhaul-billing-api" not in scaled
    assert "backhaul-accounts-api" in scaled


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["kafka.securityProtocol=SASL_SSL"], "kafka.sasl.mechanism"),
        (["kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.securityProtocol=SASL_SSL"], "username"),
        (["smtp.tls=true", "smtp.starttls=true"], "not both"),
        (["smtp.username=mailer"], "go together"),
        (["smtp.caSecret=relay-ca", "smtp.starttls=false"], "smtp.caSecret needs"),
        # values.schema.json: a misspelt or unknown value is an error, not silently ignored
        (["services.billing.api.replica=3"], "additional properties 'replica' not allowed"),
        (["kafka.securityProtocol=SCRAM"], "securityProtocol"),
        (["services.radius.enabled=true"], "radius"),
    ],
)
def test_chart_refuses_values_that_cannot_work(helm: str, values: list[str], message: str) -> None:
    args = [arg for value in values for arg in ("--set", value)]
    assert message in _render_error(helm, *args)


def test_a_private_smtp_ca_reaches_notifications_only(helm: str) -> None:
    if "SMTP_CA_FILE" not in _known_settings("notifications"):
        pytest.skip("notifications reads no SMTP_CA_FILE in this checkout")
    manifests = _render(helm, "--set", "smtp.caSecret=relay-ca")
    for (service, role), process in _chart_processes(manifests).items():
        assert ("SMTP_CA_FILE" in process["env"]) == (service == "notifications"), (service, role)
    pod = _objects(manifests, "Deployment")["backhaul-notifications-worker"]["spec"]["template"]
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "smtp-ca"]
    ca_file = _container_env(manifests, pod["spec"])["SMTP_CA_FILE"]["value"]
    assert ca_file.startswith(mount["mountPath"] + "/")


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_chart_objects_point_at_each_other(helm: str, values: Path) -> None:
    manifests = _render(helm, "--values", str(values))
    pods = {
        (obj["kind"], name): obj["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "Job")
        for name, obj in _objects(manifests, kind).items()
    }
    deployments = _objects(manifests, "Deployment")
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert [key for key, labels in pods.items() if _selects(selector, labels)] == [
            ("Deployment", name)
        ], f"{name}: its selector must match its own pods only"
    for name, service in _objects(manifests, "Service").items():
        chosen = [
            key for key, labels in pods.items() if _selects(service["spec"]["selector"], labels)
        ]
        assert chosen == [("Deployment", f"{name}-api")], f"Service {name} selects {chosen}"
    for name, budget in _objects(manifests, "PodDisruptionBudget").items():
        chosen = [
            k
            for k, labels in pods.items()
            if _selects(budget["spec"]["selector"]["matchLabels"], labels)
        ]
        assert chosen == [("Deployment", name)], f"PodDisruptionBudget {name} selects {chosen}"
    for name, policy in _objects(manifests, "NetworkPolicy").items():
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert any(_selects(selector, labels) for labels in pods.values()), (
            f"{name} selects nothing"
        )
    for name in _autoscaled(manifests):
        assert name in deployments, f"an autoscaler targets a missing Deployment {name}"
        assert "replicas" not in deployments[name]["spec"], f"{name}: the autoscaler owns replicas"
    config_maps = _objects(manifests, "ConfigMap")
    for deployment in deployments.values():
        for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
            assert source["configMapRef"]["name"] in config_maps
        mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert {m["name"] for m in mounts} <= volumes


def test_compose_dependencies_exist_and_host_ports_are_unique() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on a missing {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    host_ports = [
        port.rsplit(":", 2)[-2]
        for service in services.values()
        for port in service.get("ports", [])
    ]
    assert len(host_ports) == len(set(host_ports)), f"host ports used twice: {host_ports}"
