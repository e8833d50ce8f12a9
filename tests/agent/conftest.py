"""Fixtures for the image agent: a real registry (Debian's docker-registry), the agent as a
real process (python -m spawner_ext.agent) against the podman engine, and the small local
Debian base image pushed to that registry once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.integration.hubproc import free_port
from tests.integration.test_images import Registry

ROOT = Path(__file__).resolve().parents[2]
BASE_LOCAL = "localhost/dsw/debian:bookworm"


@pytest.fixture(scope="session")
def engine_url() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "engine.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("agent-registry"))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def base_ref(registry) -> str:
    ref = f"{registry.host}/dsw/base/debian:bookworm"
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", BASE_LOCAL, ref], check=True)
    return ref


class Agent:
    def __init__(self, tmp: Path, engine_url: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        (tmp / "token").write_text(self.token + "\n")
        self.env = {**os.environ, "DSW_AGENT_TOKEN_FILE": str(tmp / "token"), "DSW_AGENT_REGISTRY_INSECURE": "1",
                    "DSW_AGENT_WORKDIR": str(tmp)}
        if engine_url:
            self.env["DSW_AGENT_ENGINE_URL"] = engine_url
        self.log = tmp / "agent.log"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "spawner_ext.agent", "--port", str(self.port)],
                                     env=self.env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                if requests.get(f"{self.url}/v1/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"agent did not start: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def save(self, token: str | None = "", **body):
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.post(f"{self.url}/v1/saves", json=body, headers=headers, timeout=300)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, engine_url):
    a = Agent(tmp_path_factory.mktemp("agent"), engine_url).start()
    yield a
    a.stop()
