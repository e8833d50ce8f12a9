"""Integration fixtures: the real engine (podman's Docker API), the real managed
image, and a real hub + proxy per module."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest
import yaml

from .hubproc import ROOT, Hub

TEST_USERS = {"t-alice": "owner", "t-bob": "developer", "t-vic": "visitor", "t-lara": "labeler"}


def managed_image(image_id: str = "notebook-cpu") -> str:
    meta = yaml.safe_load((ROOT / "images" / "images.yaml").read_text())
    return next(i["image"] for i in meta["images"] if i["id"] == image_id)


@pytest.fixture(scope="session")
def engine_url() -> str:
    """Started by scripts/engine.sh (idempotent), as the README's commands do."""
    out = subprocess.run([str(ROOT / "scripts" / "engine.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def engine(engine_url):
    client = docker.DockerClient(base_url=engine_url, timeout=60)
    image = managed_image()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{image} is missing: scripts/test.sh builds it with images/build.sh")
    yield client
    client.close()


def make_catalog(tmp_path: Path, **overrides) -> Path:
    data = {
        "image_metadata": str(ROOT / "images" / "images.yaml"),
        "platform_admins": ["t-root"],
        "workspaces": [
            {"id": "tvision", "members": dict(TEST_USERS), "resource_groups": ["cpu"]},
            {"id": "tnlp", "members": {"t-bob": "developer"}, "resource_groups": ["cpu"]},
        ],
        "instance_types": [
            {"id": "small", "cpu": 1, "memory": "1Gi"},
            {"id": "half", "cpu": "500m", "memory": "768Mi"},
        ],
        "resource_groups": [{"id": "cpu", "capacity": {"cpu": 8, "memory": "16Gi"}}],
    }
    data.update(overrides)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cleanup_engine(client: docker.DockerClient, prefix: str = "t-") -> None:
    """Remove what tests made: containers and home volumes of the test users (``prefix``*)."""
    for c in client.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if c.labels.get("dsw/user", "").startswith(prefix):
            c.remove(force=True)
    for v in client.volumes.list(filters={"label": "dsw/managed=true"}):
        if v.attrs.get("Labels", {}).get("dsw/user", "").startswith(prefix):
            v.remove(force=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("hub")
    cleanup_engine(engine)
    h = Hub(tmp / "state", make_catalog(tmp), engine_url)
    h.start()
    yield h
    h.stop()
    cleanup_engine(engine)
