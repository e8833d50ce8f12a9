"""The image agent as a real process against podman and a real registry: a managed
container's own layer pushed on its base, launched again, incremental, refused without the
token or for an unmanaged container, capped, and a registry down mid-save."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

CHANGES = " && ".join([
    "echo made-here > /opt/made.txt",
    "rm /etc/issue.net",
    "mkdir -p /home/jovyan && echo home > /home/jovyan/h",
    "echo scratch > /tmp/scratch",
])


def run_box(image: str, managed: bool = True, tls: bool = True) -> tuple[str, str]:
    name = f"agent-t-{uuid.uuid4().hex[:8]}"
    labels = ["--label", "dsw/managed=true"] if managed else []
    cid = subprocess.run(["podman", "run", "-d", "--name", name, *labels, *([] if tls else ["--tls-verify=false"]),
                          image, "sleep", "infinity"], check=True, capture_output=True, text=True).stdout.strip()
    return name, cid


def rm_box(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


def in_box(name: str, script: str) -> str:
    return subprocess.run(["podman", "exec", name, "sh", "-c", script], check=True, capture_output=True,
                          text=True).stdout


def tags(registry, repo: str) -> list[str]:
    r = requests.get(f"http://{registry.host}/v2/{repo}/tags/list", timeout=5)
    return (r.json().get("tags") or []) if r.status_code == 200 else []


@pytest.fixture(scope="module")
def box(base_ref):
    name, cid = run_box(base_ref, tls=False)
    in_box(name, CHANGES)
    yield name, cid
    rm_box(name)


def test_save_pushes_the_layer_and_the_image_runs(agent, registry, box, base_ref):
    name, cid = box
    target = f"{registry.host}/dsw/ws/agent-first:v1"
    r = agent.save(container_id=cid, base=base_ref, target=target, comment="first")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["ref"] == target and first["layer_size"] > 0
    # only the new layer and the config went up: the base layers were mounted, not uploaded
    assert first["uploaded"] <= first["layer_size"] + 4096
    status = requests.get(f"{agent.url}/v1/saves/{cid}", headers={"Authorization": f"Bearer {agent.token}"},
                          timeout=5).json()
    assert status == {"state": "done", "built": first["layer_size"], "uploaded": first["uploaded"]}
    again, _ = run_box(target, managed=False, tls=False)
    try:
        out = in_box(again, "cat /opt/made.txt; test -e /etc/issue.net && echo still-there; "
                            "ls /home/jovyan /tmp 2>&1; cat /etc/hostname")
        assert "made-here" in out and "still-there" not in out
        assert "scratch" not in out and "\nh\n" not in out
    finally:
        rm_box(again)
        subprocess.run(["podman", "rmi", "-f", target], capture_output=True)
    # the saved image's history says what made it; no hub variables in its environment
    man = requests.get(f"http://{registry.host}/v2/dsw/ws/agent-first/manifests/v1", timeout=5, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    cfg = requests.get(f"http://{registry.host}/v2/dsw/ws/agent-first/blobs/{man.json()['config']['digest']}",
                       timeout=5).json()
    assert cfg["rootfs"]["diff_ids"][-1] == first["diff_id"] and cfg["history"][-1]["comment"] == "first"


def test_second_save_uploads_only_the_new_layer(agent, registry, box, base_ref):
    name, cid = box
    in_box(name, "echo one-more > /opt/second.txt")
    r = agent.save(container_id=cid, base=base_ref, target=f"{registry.host}/dsw/ws/agent-first:v2")
    assert r.status_code == 200, r.text
    second = r.json()
    base_bytes = sum(l["size"] for l in requests.get(
        f"http://{registry.host}/v2/dsw/base/debian/manifests/bookworm", timeout=5,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"}).json()["layers"])
    assert second["uploaded"] <= second["layer_size"] + 4096 < base_bytes / 10


def test_refusals(agent, registry, box, base_ref):
    name, cid = box
    body = {"container_id": cid, "base": base_ref, "target": f"{registry.host}/dsw/ws/agent-stolen:x"}
    assert agent.save(token=None, **body).status_code == 401
    assert agent.save(token="wrong", **body).status_code == 401
    other, other_id = run_box(base_ref, managed=False, tls=False)
    try:
        r = agent.save(**{**body, "container_id": other_id})
        assert r.status_code == 403 and "not a managed DSW instance" in r.json()["detail"]
    finally:
        rm_box(other)
    r = agent.save(**{**body, "max_layer_bytes": 100})
    assert r.status_code == 413 and "cap 100 bytes" in r.json()["detail"]
    r = agent.save(**{**body, "container_id": "0" * 64})
    assert r.status_code == 404
    r = agent.save(**{**body, "container_id": "../../etc"})
    assert r.status_code == 422
    assert tags(registry, "dsw/ws/agent-stolen") == []


def test_registry_down_mid_save_then_retry(agent, registry, box, base_ref):
    name, cid = box
    target = f"{registry.host}/dsw/ws/agent-retry:v1"
    registry.stop()
    try:
        r = agent.save(container_id=cid, base=base_ref, target=target)
        assert r.status_code == 502 and "failed" in r.json()["detail"], r.text
    finally:
        registry.start()
    assert tags(registry, "dsw/ws/agent-retry") == []
    assert in_box(name, "cat /opt/made.txt").strip() == "made-here"  # the instance is untouched
    r = agent.save(container_id=cid, base=base_ref, target=target)
    assert r.status_code == 200, r.text
    assert tags(registry, "dsw/ws/agent-retry") == ["v1"]
