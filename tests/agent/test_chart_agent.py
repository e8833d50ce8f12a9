"""The chart's image agent DaemonSet (imageAgent.*), rendered by the real Helm engine into the
API emulator (kmock; no Kubernetes API server runs here) and validated strictly."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import kmock
import pytest
import yaml

from tests.kube.conftest import VERBS, DSWEmulator, declare, kubeconfig_for
from tests.kube.validation import assert_valid

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dsw-hub"


async def render(tmp_path: Path, values: dict) -> dict:
    async with DSWEmulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        emulator.resources["apps/v1/daemonsets"] = kmock.ResourceInfo(namespaced=True, kind="DaemonSet", verbs=VERBS)
        request = tmp_path / "render.json"
        request.write_text(json.dumps({"chart": str(CHART), "values": values, "release": "dsw-hub",
                                       "namespace": "dsw", "kubeconfig": kubeconfig_for(emulator)}))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.kube.helm_render", str(request), cwd=ROOT,
            env={**os.environ, "HELM_DRIVER": "memory"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out)
    if "manifest" in result:
        result["objects"] = [d for d in yaml.safe_load_all(result.pop("manifest")) if d]
    return result


def daemonsets(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "DaemonSet"]


async def test_no_agent_unless_enabled(tmp_path):
    result = await render(tmp_path, {})
    assert "error" not in result, result.get("error")
    assert daemonsets(result["objects"]) == []


async def test_agent_daemonset(tmp_path):
    values = {"imageAgent": {"enabled": True, "registrySecret": "push-creds", "registryInsecure": True,
                             "nodeSelector": {"dsw.io/instances": "true"}}}
    result = await render(tmp_path, values)
    assert "error" not in result, result.get("error")
    (ds,) = daemonsets(result["objects"])
    assert_valid(ds)
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["hostPID"] is True and c["securityContext"]["privileged"] is True
    assert pod["nodeSelector"] == {"dsw.io/instances": "true"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/var/lib/containerd", "/var/lib/containers/storage"):
        assert mounts[path]["readOnly"] is True  # the runtime's storage: read only
    assert mounts["/etc/dsw-agent/token"]["readOnly"] is True
    env = {e["name"]: e for e in c["env"]}
    assert env["DSW_AGENT_TOKEN_FILE"]["value"] == "/etc/dsw-agent/token/token"
    assert env["DSW_AGENT_REGISTRY_USER"]["valueFrom"]["secretKeyRef"] == {"name": "push-creds", "key": "username"}
    assert env["DSW_AGENT_REGISTRY_INSECURE"]["value"] == "1"
    assert c["command"][:3] == ["python3", "-m", "spawner_ext.agent"] and "--port=9731" in c["command"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["token"]["secret"]["secretName"] == "dsw-image-agent-token"
    assert c["image"].endswith("/dsw/hub:0.1.0")  # the hub's image by default


@pytest.mark.parametrize("values,field", [
    ({"imageAgent": {"enabled": "yes"}}, "enabled"),
    ({"imageAgent": {"storagePaths": ["relative/path"]}}, "storagePaths"),
    ({"imageAgent": {"colour": "red"}}, "colour"),
])
async def test_invalid_agent_values_are_refused(tmp_path, values, field):
    result = await render(tmp_path, values)
    assert field in result.get("error", ""), result
