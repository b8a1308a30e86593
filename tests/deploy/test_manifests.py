"""The container, compose file, Kubernetes manifests, alert rules and dashboard, validated offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_compose_file_follows_the_compose_specification():
    r = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_validation_can_fail(tmp_path):
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: 5\n    ports: nope\n")
    assert run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)).returncode != 0


def test_kubernetes_manifests_are_valid():
    files = sorted(str(p) for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    r = run(str(BIN / "kubernetes-validate"), "--strict", *files)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = (ROOT / "deploy" / "k8s" / "service.yaml").read_text()
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert f"kind: {kind}" in kinds
    assert "readinessProbe" in kinds and "livenessProbe" in kinds and "prometheus.io/scrape" in kinds


def test_kubernetes_validation_can_fail(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: many}\n")
    assert run(str(BIN / "kubernetes-validate"), "--strict", str(bad)).returncode != 0


def test_alert_rules_pass_promtool():  # `make test` installs Debian's prometheus package, with promtool
    r = run("promtool", "check", "rules", "deploy/prometheus/alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 6 rules found" in r.stdout


def test_dockerfile_has_a_slim_non_root_runtime_and_an_embedded_target():
    text = (ROOT / "Dockerfile").read_text()
    assert "AS runtime" in text and "AS embedded" in text and "-slim" in text
    runtime = text.split("AS runtime", 1)[1].split("AS embedded", 1)[0]
    assert "USER medix" in runtime and "HEALTHCHECK" in runtime
    assert not any("vllm" in line.lower() for line in runtime.splitlines() if line.startswith("RUN"))


def test_dashboard_covers_what_operators_need():
    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "medix.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("medix_requests_total", "medix_request_duration_seconds_bucket", "medix_backend_requests_total",
                   "medix_backend_circuit_state", "medix_cache_requests_total", "medix_embed_batch_size_bucket",
                   "medix_reward_component_sum"):
        assert metric in exprs, metric
