"""Fixtures for the image agent: a real registry (Debian's docker-registry), the agent as a
real process (python -m spawner_ext.agent) against the podman engine, and the small local
Debian base image pushed to that registry once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.test_images import Registry

from .agentproc import Agent

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


@pytest.fixture(scope="module")
def agent(tmp_path_factory, engine_url):
    a = Agent(tmp_path_factory.mktemp("agent"), engine_url).start()
    yield a
    a.stop()
