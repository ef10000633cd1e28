"""deploy/kubernetes (issue #11): every rendered manifest validates against the Kubernetes schemas
(strictly: an unknown field is an error), the custom resources against the fields their operators
define, and the manifests agree with the product (ports, probes, grace period, partitions, the
metric names the alerts and the dashboard query)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = [KUBE / "base", KUBE / "overlays" / "production"]

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRING_MAP},
}
_BEHAVIOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        direction: {
            "type": "object",
            "required": ["stabilizationWindowSeconds"],
            "properties": {
                "stabilizationWindowSeconds": {"type": "integer", "minimum": 0},
                "policies": {"type": "array"},
            },
        }
        for direction in ("scaleUp", "scaleDown")
    },
}


def _resource(api_version: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A custom resource: its apiVersion, metadata, and a spec with no field beyond `spec`'s."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "metadata": _META,
            "spec": {"type": "object", "additionalProperties": False, **spec},
        },
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # the fields of KEDA 2.x and Prometheus Operator v1 that these manifests use
    "ScaledObject": _resource(
        "keda.sh/v1alpha1",
        {
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 1},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "advanced": {
                    "type": "object",
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"behavior": _BEHAVIOR},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"enum": ["kafka", "apache-kafka"]},
                            "metadata": {
                                **_STRING_MAP,
                                "required": ["bootstrapServers", "consumerGroup", "lagThreshold"],
                            },
                            "authenticationRef": {"type": "object", "required": ["name"]},
                        },
                    },
                },
            },
        },
    ),
    "TriggerAuthentication": _resource(
        "keda.sh/v1alpha1",
        {
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name", "key"],
                        "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")},
                    },
                }
            },
        },
    ),
    "ServiceMonitor": _resource(
        "monitoring.coreos.com/v1",
        {
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                        },
                    },
                },
            },
        },
    ),
    "PrometheusRule": _resource(
        "monitoring.coreos.com/v1",
        {
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            }
                        },
                    },
                }
            },
        },
    ),
}


def validate(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    for doc in documents:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            if doc.get("kind") in CRD_SCHEMAS:
                jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            else:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            problems.append(f"{name}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no schema for this kind")
    return problems


def render(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the per-file test validates the manifests")
    out = subprocess.run([kubectl, "kustomize", str(folder)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")


def test_every_manifest_file_is_valid_without_rendering() -> None:
    files = _files()
    assert len(files) >= 12
    documents = []
    for path in files:
        if "overlays" in path.parts:
            continue  # patches are partial resources, checked after rendering
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert validate(documents) == []


@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda p: p.name)
def test_rendered_manifests_validate(folder: Path) -> None:
    documents = render(folder)
    kinds = {d["kind"] for d in documents}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ScaledObject",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    } <= kinds
    assert validate(documents) == []


def test_a_typo_fails_validation() -> None:
    deployment = yaml.safe_load((KUBE / "base" / "worker-deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert validate([deployment])
    scaled = next(yaml.safe_load_all((KUBE / "base" / "worker-scaledobject.yaml").read_text()))
    scaled["spec"]["maxReplicas"] = 3
    assert validate([scaled])


def _by(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda p: p.name)
def test_manifests_agree_with_the_product(folder: Path) -> None:
    documents = render(folder)
    settings = next(
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("claims-settings")
    )["data"]
    grace = float(settings["WORKER_GRACEFUL_TIMEOUT_SECONDS"])
    for name, port in (
        ("claims-worker", int(settings["WORKER_HEALTH_PORT"])),
        ("claims-gateway", int(settings["WORKER_GATEWAY_PORT"])),
        ("claims-records", int(settings["WORKER_HEALTH_PORT"])),
    ):
        pod = _by(documents, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > grace
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["ports"][0]["containerPort"] == port
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
    scaled = _by(documents, "ScaledObject", "claims-worker")["spec"]
    assert scaled["minReplicaCount"] == 1 and scaled["maxReplicaCount"] == int(settings["WORKER_PARTITIONS"])
    trigger = scaled["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == settings["WORKER_CONSUMER_GROUP"]
    assert trigger["bootstrapServers"] == settings["KAFKA_BOOTSTRAP_SERVERS"]
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    secrets = {
        ref["secretKeyRef"]["name"]
        for d in documents
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for ref in (e.get("valueFrom", {}) for e in c.get("env", []))
        if "secretKeyRef" in ref
    }
    assert secrets == {"claims-redis", "claims-kafka", "claims-gateway-tokens", "claims-records-db"}
    assert "REDIS_URL" not in settings and "KAFKA_SASL_PASSWORD" not in settings  # secrets stay in Secrets


def _metric_names() -> set[str]:
    source = (ROOT / "worker" / "ops" / "metrics.py").read_text()
    base = set(re.findall(r'p \+ "([a-z_]+)"', source))
    names = {f"claims_worker_{n}" for n in base} | set(re.findall(r'"(claims_[a-z_]+)"', source))
    out = set()
    for name in names:
        out |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return out


def test_alerts_and_dashboard_query_metrics_the_product_exposes() -> None:
    known = _metric_names()
    rules = yaml.safe_load((KUBE / "base" / "prometheusrule.yaml").read_text())
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {
        "ClaimsWorkerLagGrowing",
        "ClaimsWorkerNotCommitting",
        "ClaimsWorkerDeadLetters",
        "ClaimsGateway5xx",
        "ClaimsPublishToAnswerSlow",
    } <= alerts
    dashboard = json.loads((KUBE / "base" / "dashboards" / "claims-settlement.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(claims_[a-z_]+)", e)}
    assert used and used <= known, used - known


def test_the_deployed_thresholds_are_valid_and_mounted_by_the_alerts_job() -> None:
    from worker.domain.warning import load_thresholds

    load_thresholds(KUBE / "base" / "warning" / "thresholds.toml")
    documents = render(KUBE / "overlays" / "production")
    job = _by(documents, "CronJob", "claims-alerts")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in job["containers"][0]["env"]}
    mount = job["containers"][0]["volumeMounts"][0]["mountPath"]
    assert env["WORKER_WARNING_THRESHOLDS"].startswith(mount)
    assert job["volumes"][0]["configMap"]["name"].startswith("claims-warning")


def test_the_deployed_policy_set_is_valid_and_mounted_where_claims_are_settled() -> None:
    from worker.domain.policy import check_path

    assert check_path(KUBE / "base" / "policies") == []
    documents = render(KUBE / "overlays" / "production")
    settings = next(
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("claims-settings")
    )["data"]
    for name in ("claims-worker", "claims-gateway"):
        pod = _by(documents, "Deployment", name)["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["policies"] == settings["WORKER_POLICY_DIR"]
        volume = next(v for v in pod["volumes"] if v["name"] == "policies")
        assert volume["configMap"]["name"].startswith("claims-policies")
