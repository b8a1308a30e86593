"""Starting and stopping the real parts (vLLM judge server, the service, redis-server) as processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from clients.datasets import DATA_DIR
from service.bench.waiting import wait_until_up

ROOT = Path(__file__).resolve().parents[2]
DATA = DATA_DIR
BIN = str(Path(sys.executable).parent / "medix-reward")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.popen = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def wait_http(proc: Proc, url: str, timeout: float) -> None:
    try:
        wait_until_up(url, what=proc.name, timeout_s=timeout, every_s=0.5,
                      exited=lambda: None if proc.alive() else "its process ended")
    except RuntimeError as exc:
        proc.stop()
        raise RuntimeError(f"{exc}\n{proc.tail()}") from None


def start_judge_server(log_dir: Path, eager: bool = True, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    argv = [BIN, "judge-server", "--port", str(port)] + (["--eager"] if eager else [])
    proc = Proc("judge-server", argv, {"MEDIX_ENGINE_CPUS": "0"}, log_dir / f"judge-{port}.log").start()
    wait_http(proc, f"http://127.0.0.1:{port}/v1/models", 420)
    return proc, f"http://127.0.0.1:{port}/v1"


def start_service(log_dir: Path, env: dict[str, str], timeout: float = 300) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("service", [BIN, "serve", "--port", str(port)], env, log_dir / f"service-{port}.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_http(proc, f"{url}/readyz", timeout)
    return proc, url


def start_redis(log_dir: Path, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = Proc("redis", argv, {}, log_dir / f"redis-{port}.log").start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start:\n{proc.tail()}")


def metric(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from the service's /metrics (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
    return 0.0
