"""A real Prometheus scraping the real service under traffic: every dashboard query returns data and every
alert rule evaluates without error."""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import httpx
import pytest

from clients.datasets import grpo_batch
from tests.deploy.test_manifests import dashboard_queries
from tests.integration.stack import ROOT, Proc, free_port, wait_http

pytestmark = pytest.mark.integration


def query(prom: str, expr: str) -> dict:
    return httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()


def test_dashboard_queries_return_data_and_alerts_evaluate(service, slake, logs):
    target = urlparse(service.url).netloc
    port = free_port()
    cfg = logs / "prometheus.yml"
    cfg.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "medix", "static_configs": [{"targets": [target]}]}],
    }))
    proc = Proc("prometheus", ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={logs / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}"], {}, logs / "prometheus.log").start()
    prom = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{prom}/-/ready", 60)
        items = grpo_batch(slake, questions=4, samples=4, seed=50)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:  # traffic while Prometheus scrapes: misses, then hits
            assert httpx.post(f"{service.url}/reward", json={"items": items}, timeout=120).status_code == 200
            time.sleep(0.5)
        assert query(prom, 'up{job="medix"}')["data"]["result"][0]["value"][1] == "1"

        dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "medix.json").read_text())
        empty = []
        for title, expr in dashboard_queries(dashboard):  # variables (prices, ranges) filled in as Grafana does
            body = query(prom, expr)
            assert body["status"] == "success", (title, body)
            if not body["data"]["result"]:
                empty.append(title)
        assert not empty, f"dashboard panels with no data: {empty}"

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if rules and all(r.get("health") != "unknown" for r in rules):
                break
            time.sleep(1)
        assert len(rules) == 6
        bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, bad
    finally:
        proc.stop()
