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
from tests.kube.test_chart import render as render_chart  # noqa: F401  (fixture)
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


def allows(objects: list[dict], sa: tuple[str, str], namespace: str, resource: str, verb: str) -> bool:
    """Whether the rendered RBAC lets service account ``sa`` (namespace, name) ``verb`` core
    ``resource`` in ``namespace``: a Role there or a ClusterRole, bound to it."""
    def bound(binding):
        return any(s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) == sa for s in binding["subjects"])

    def grants(role):
        return any("" in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])

    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects
             if o["kind"] in ("Role", "ClusterRole")}
    for b in objects:
        if b["kind"] == "RoleBinding" and b["metadata"]["namespace"] == namespace and bound(b):
            ref = b["roleRef"]
            role = roles.get((ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"]))
            if role and grants(role):
                return True
        if b["kind"] == "ClusterRoleBinding" and bound(b):
            role = roles.get(("ClusterRole", None, b["roleRef"]["name"]))
            if role and grants(role):
                return True
    return False


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("workspaces", [["vision"], []])  # listed: Roles per namespace; none: ClusterRole
async def test_chart_wires_saving_on_kubernetes(render_chart, tmp_path, monkeypatch, workspaces):
    """imageAgent.enabled: the hub's DSW service gets what save_on_kube needs (the agent token as a
    file from the Secret, where pods and agents are, the registry), the hub may read those pods,
    and the network lets the hub (and only the hub) reach the agents' port."""
    from spawner_ext import snapshots
    from spawner_ext.kube.objects import namespace_name
    from tests.kube.test_chart import one
    from tests.kube.test_hub_config import load_chart_config

    values = {"imageAgent": {"enabled": True, "registry": "registry.example.com:5000/dsw-saved",
                             "registryInsecure": True, "tokenSecret": "agent-tok", "port": 9740},
              "singleuser": {"namespaceTemplate": "team-{workspace}"},
              "rbac": {"workspaces": workspaces}, "networkPolicy": {"enabled": True}}
    objects = (await render_chart(values))["objects"]
    for obj in objects:
        assert_valid(obj)
    c, env, _ = load_chart_config(objects, tmp_path, monkeypatch)
    (dsw,) = [s for s in c.JupyterHub.services if s["name"] == "dsw"]
    service_env = dsw["environment"]
    assert service_env["DSW_KUBE_AGENT_NAMESPACE"] == "dsw"  # the release namespace
    assert service_env["DSW_KUBE_NAMESPACE_TEMPLATE"] == "team-{workspace}"
    assert service_env["DSW_IMAGE_REGISTRY"] == "registry.example.com:5000/dsw-saved"
    assert service_env["DSW_IMAGE_REGISTRY_TLS_VERIFY"] == "0"  # registryInsecure
    assert "DSW_ENGINE_URL" not in service_env

    # the service reads these as the save path does
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    kube = snapshots.KubeSettings.from_environ()
    assert kube is not None and namespace_name(kube.namespace_template, "vision") == "team-vision"
    (ds,) = daemonsets(objects)
    agent_labels = ds["spec"]["template"]["metadata"]["labels"]
    selector = dict(pair.split("=", 1) for pair in kube.agent_selector.split(","))
    assert matches(selector, agent_labels)
    # ... and only the agents: the hub's and the proxy's pods do not match
    for name in ("dsw-hub-hub", "dsw-hub-proxy"):
        assert not matches(selector, one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"])

    # the token: a file from the agent's Secret, mounted read-only into the hub; never in the ConfigMap
    hub_pod = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["spec"]
    token_dir, token_name = service_env["DSW_AGENT_TOKEN_FILE"].rsplit("/", 1)
    (mount,) = [m for m in hub_pod["containers"][0]["volumeMounts"] if m["mountPath"] == token_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in hub_pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "agent-tok" == ds["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    assert volume["secret"]["items"] == [{"key": "token", "path": token_name}]
    agent_token_file = next(e["value"] for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]
                            if e["name"] == "DSW_AGENT_TOKEN_FILE")
    assert agent_token_file.endswith("/" + token_name)  # the same key on both sides
    assert "agent-tok" not in json.dumps(one(objects, "ConfigMap", "dsw-hub-hub"))
    assert "DSW_AGENT_TOKEN" not in {e["name"] for e in hub_pod["containers"][0]["env"]}  # no value in the env

    # RBAC: the service lists the instance's pods in the workspace namespace and the agents in the
    # release namespace, with the hub's service account
    sa = ("dsw", hub_pod["serviceAccountName"])
    for ns in ("team-vision", "dsw"):
        assert allows(objects, sa, ns, "pods", "list") and allows(objects, sa, ns, "pods", "get")
    if workspaces:  # listed workspaces: nothing cluster-wide, the agents' namespace read only
        assert not allows(objects, sa, "dsw", "pods", "delete")
        assert not allows(objects, sa, "dsw", "secrets", "get")

    # NetworkPolicy: the hub reaches the agents' port; nobody else may
    (policy,) = [p for p in objects if p["kind"] == "NetworkPolicy" and matches(
        p["spec"]["podSelector"]["matchLabels"], agent_labels)]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    port_names = {p["name"]: p["containerPort"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert [port_names[p["port"]] for p in rule["ports"]] == [9740]
    hub_labels = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["metadata"]["labels"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"} and matches(peer["podSelector"]["matchLabels"], hub_labels)
    proxy_labels = one(objects, "Deployment", "dsw-hub-proxy")["spec"]["template"]["metadata"]["labels"]
    assert not matches(peer["podSelector"]["matchLabels"], proxy_labels)
    # no policy limits the hub's own egress (it would have to allow the agents' port too)
    assert not [p for p in objects if p["kind"] == "NetworkPolicy" and "Egress" in p["spec"]["policyTypes"]
                and matches(p["spec"]["podSelector"].get("matchLabels", {}), hub_labels)]


async def test_chart_without_agent_wires_no_saving(render_chart, tmp_path, monkeypatch):
    from tests.kube.test_chart import one
    from tests.kube.test_hub_config import load_chart_config

    objects = (await render_chart({}))["objects"]
    c, _, _ = load_chart_config(objects, tmp_path, monkeypatch)
    (dsw,) = [s for s in c.JupyterHub.services if s["name"] == "dsw"]
    assert not {"DSW_KUBE_AGENT_NAMESPACE", "DSW_AGENT_TOKEN_FILE"} & set(dsw["environment"])
    hub_pod = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["spec"]
    assert "image-agent-token" not in {v["name"] for v in hub_pod["volumes"]}
