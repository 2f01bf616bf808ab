"""The Kubernetes examples parse, fit together, and name only real settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "deploy.md"
ENV_RE = re.compile(r"\bMLGATE_[A-Z0-9_]+\b")
# Read by the test suite and benchmarks, not by the service.
NOT_SETTINGS = {"MLGATE_TEST_DATABASE_URL", "MLGATE_TEST_REDIS_URL", "MLGATE_REQUIRE_SERVICES"}


def _load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    assert len(docs) == 1, name
    doc: dict[str, Any] = docs[0]
    return doc


def _fields() -> set[str]:
    return {f"MLGATE_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _load("deployment.yaml")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_kinds() -> None:
    assert _load("deployment.yaml")["kind"] == "Deployment"
    assert _load("service.yaml")["kind"] == "Service"
    hpa = _load("hpa.yaml")
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == _load("deployment.yaml")["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_every_env_name_is_a_setting(deployment: dict[str, Any]) -> None:
    names = [item["name"] for item in _container(deployment)["env"]]
    assert names, "no env in the deployment"
    unknown = [n for n in names if n not in _fields()]
    assert unknown == [], f"not fields of Settings: {unknown}"
    assert len(names) == len(set(names))
    for required in ("MLGATE_DATABASE_URL", "MLGATE_REDIS_URL", "MLGATE_KEY_ENCRYPTION_KEY"):
        assert required in names


def test_secrets_come_from_secrets(deployment: dict[str, Any]) -> None:
    env = {item["name"]: item for item in _container(deployment)["env"]}
    for name in ("MLGATE_DATABASE_URL", "MLGATE_KEY_ENCRYPTION_KEY", "MLGATE_ADMIN_PASSWORD"):
        assert "value" not in env[name], f"{name} must come from a Secret"
        assert "secretKeyRef" in env[name]["valueFrom"]


def test_literal_values_are_valid_settings(deployment: dict[str, Any]) -> None:
    literal = {
        item["name"][len("MLGATE_") :].lower(): item["value"]
        for item in _container(deployment)["env"]
        if "value" in item
    }
    # Production checks pass with the literal values and placeholder secrets.
    Settings(
        _env_file=None,
        **literal,
        database_url="postgresql+asyncpg://u:p@db/mlgate",
        key_encryption_key="k" * 48,
    )


def test_probes_service_and_ports_agree(deployment: dict[str, Any]) -> None:
    container = _container(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in container["ports"]}
    service = _load("service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert container["args"][0] == "serve"


def test_env_names_in_deploy_guide_are_settings() -> None:
    names = set(ENV_RE.findall(DOCS.read_text())) - NOT_SETTINGS
    assert names, "the guide names no settings"
    assert sorted(names - _fields()) == []
