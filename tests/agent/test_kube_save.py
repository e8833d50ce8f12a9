"""Saving on Kubernetes, orchestration: the DSW service's save path finds the instance's pod
in the API emulator (kmock: no Kubernetes API server runs here), reads its node and container
id, finds the image agent pod on that node and calls it. The agent is a real process and the
"pod's" container a real podman container (the agent finds it from /proc, as on a node); the
registry is the real docker-registry. Also: a node without an agent, a pod not running."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import pytest
import requests

from spawner_ext import snapshots
from tests.kube.conftest import emulator, kubeconfig_for  # noqa: F401  (fixture)

from .agentproc import Agent

WS = "kws"
SETTINGS = snapshots.KubeSettings(namespace_template="dsw-{workspace}", agent_namespace="dsw",
                                  agent_selector="app.kubernetes.io/component=image-agent")


@pytest.fixture(scope="module")
def kube_agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("kagent"), engine_url=None).start()  # no engine: kube mode
    yield a
    a.stop()


@pytest.fixture(scope="module")
def hub_instance(base_ref):
    """A container as kubelet would run it for a hub instance (the hub's variables set)."""
    name = f"agent-t-{uuid.uuid4().hex[:8]}"
    cid = subprocess.run(["podman", "run", "-d", "--name", name, "--tls-verify=false",
                          "-e", "JUPYTERHUB_SERVICE_PREFIX=/user/k-ann/lab/", "-e", "JUPYTERHUB_API_TOKEN=secret-x",
                          base_ref, "sleep", "infinity"], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["podman", "exec", name, "sh", "-c", "echo on-the-node > /opt/kube.txt"], check=True)
    yield cid
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


def pod(name, ns, node, *, labels, annotations=None, image="", container_id="", ip="", port=0, ready=True):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations or {}},
            "spec": {"nodeName": node, "containers": [{"name": "notebook" if container_id else "agent", "image": image,
                                                       **({"ports": [{"containerPort": port}]} if port else {})}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "notebook", "containerID": f"containerd://{container_id}",
                                              "image": image, "imageID": image, "ready": True, "restartCount": 0}]
                       if container_id else []}}


async def create(emulator, p):
    url = f"{str(emulator.url).rstrip('/')}/api/v1/namespaces/{p['metadata']['namespace']}/pods"
    r = await asyncio.to_thread(requests.post, url, json=p, timeout=10)
    assert r.status_code in (200, 201), r.text


def instance(user, server, node, cid, image):
    ann = {"hub.jupyter.org/username": user, **({"hub.jupyter.org/servername": server} if server else {})}
    return pod(f"jupyter-{user}-{server}", f"dsw-{WS}", node, labels={"dsw/workspace": WS, "dsw/managed": "true",
               "dsw/image": "notebook-cpu"}, annotations=ann, image=image, container_id=cid)


@pytest.fixture
def kube_env(emulator, tmp_path, monkeypatch, kube_agent, registry):  # noqa: F811
    (tmp_path / "kubeconfig").write_text(kubeconfig_for(emulator))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("DSW_AGENT_TOKEN_FILE", kube_agent.env["DSW_AGENT_TOKEN_FILE"])
    monkeypatch.setenv("DSW_IMAGE_REGISTRY", f"{registry.host}/dsw")
    return emulator


def save(**kw):
    return asyncio.to_thread(snapshots.save_on_kube, SETTINGS, ws=WS, **kw)


async def test_the_service_calls_the_agent_on_the_pods_node(kube_env, kube_agent, hub_instance, base_ref, registry):
    await create(kube_env, instance("k-ann", "lab", "node-a", hub_instance, base_ref))
    await create(kube_env, pod("agent-b", "dsw", "node-b", labels={"app.kubernetes.io/component": "image-agent"},
                               ip="127.0.0.2", port=1))  # another node's agent: never called
    await create(kube_env, pod("agent-a", "dsw", "node-a", labels={"app.kubernetes.io/component": "image-agent"},
                               ip="127.0.0.1", port=kube_agent.port))
    done = await save(user="k-ann", server="lab", name="on-node", tag="saved-kube000001")
    assert done.pushed and done.ref == f"{registry.host}/dsw/{WS}/k-ann/on-node:saved-kube000001"
    assert done.layer_bytes > 0 and done.uploaded <= done.layer_bytes + 16384
    tags = requests.get(f"http://{registry.host}/v2/dsw/{WS}/k-ann/on-node/tags/list", timeout=5).json()["tags"]
    assert tags == ["saved-kube000001"]
    # the saved image runs and holds the file written on the node
    out = subprocess.run(["podman", "run", "--rm", "--tls-verify=false", done.ref, "cat", "/opt/kube.txt"],
                         check=True, capture_output=True, text=True).stdout
    subprocess.run(["podman", "rmi", "-f", done.ref], capture_output=True)
    assert out.strip() == "on-the-node"


async def test_a_node_without_an_agent_is_a_clear_error(kube_env, hub_instance, base_ref, registry):
    await create(kube_env, instance("k-bob", "lab", "node-c", hub_instance, base_ref))
    await create(kube_env, pod("agent-a", "dsw", "node-a", labels={"app.kubernetes.io/component": "image-agent"},
                               ip="127.0.0.1", port=1))
    with pytest.raises(snapshots.SaveError) as err:
        await save(user="k-bob", server="lab", name="nowhere", tag="saved-kube000002")
    assert err.value.status == 503 and "no image agent runs on node node-c" in err.value.message
    assert "dsw/kws/k-bob/nowhere" not in requests.get(f"http://{registry.host}/v2/_catalog", timeout=5).text


async def test_another_users_instance_or_a_stopped_one_is_not_found(kube_env, kube_agent, hub_instance, base_ref):
    await create(kube_env, instance("k-ann", "lab", "node-a", hub_instance, base_ref))
    with pytest.raises(snapshots.SaveError) as err:  # k-eve asks for k-ann's server by name: not hers
        await save(user="k-eve", server="lab", name="stolen", tag="saved-kube000003")
    assert err.value.status == 404


async def test_a_wrong_token_is_refused_by_the_agent(kube_env, kube_agent, hub_instance, base_ref, tmp_path,
                                                     monkeypatch):
    await create(kube_env, instance("k-ann", "lab", "node-a", hub_instance, base_ref))
    await create(kube_env, pod("agent-a", "dsw", "node-a", labels={"app.kubernetes.io/component": "image-agent"},
                               ip="127.0.0.1", port=kube_agent.port))
    (tmp_path / "wrong").write_text("not-the-token")
    monkeypatch.setenv("DSW_AGENT_TOKEN_FILE", str(tmp_path / "wrong"))
    with pytest.raises(snapshots.SaveError) as err:
        await save(user="k-ann", server="lab", name="forged", tag="saved-kube000004")
    assert err.value.status == 502 and "(401)" in err.value.message


async def test_deleting_a_saved_image_on_kubernetes_checks_the_pods(emulator, tmp_path, monkeypatch,  # noqa: F811
                                                                     registry):
    """No engine (Kubernetes): the DSW service's delete asks the workspace's pods (label
    dsw/image) whether an instance runs from the image; refused while one does, then the
    registry's manifest and the row go. A member without publish rights is refused."""
    import json

    import yaml

    from spawner_ext import rbac
    from spawner_ext.catalog.db import SavedImage, sessions
    from spawner_ext.roles import Action
    from spawner_ext.service import actions
    from tests.conftest import BASE_CATALOG

    (tmp_path / "kubeconfig").write_text(kubeconfig_for(emulator))
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(BASE_CATALOG))
    db = f"sqlite:///{tmp_path}/state.sqlite"
    monkeypatch.setattr(actions.Settings, "catalog_path", str(tmp_path / "catalog.yaml"))
    monkeypatch.setattr(actions.Settings, "db_url", db)
    monkeypatch.delenv("DSW_ENGINE_URL", raising=False)
    for key, value in {"KUBECONFIG": str(tmp_path / "kubeconfig"), "DSW_KUBE_AGENT_NAMESPACE": "dsw",
                       "DSW_KUBE_NAMESPACE_TEMPLATE": "dsw-{workspace}", "DSW_IMAGE_REGISTRY": f"{registry.host}/dsw",
                       "DSW_IMAGE_REGISTRY_TLS_VERIFY": "0"}.items():
        monkeypatch.setenv(key, value)
    ref = f"{registry.host}/dsw/vision/k-del/gone:saved-kdel00001"
    from tests.agent.conftest import BASE_LOCAL
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", BASE_LOCAL, ref], check=True)
    with sessions(db)() as s, s.begin():
        s.add(SavedImage(id="saved-kdel00001", workspace="vision", owner="bob", name="gone", image=ref,
                         base_image="nb-cpu"))
    running = pod("jupyter-bob-from-saved", "dsw-vision", "node-a", image=ref, container_id="c0ffee",
                  labels={"dsw/workspace": "vision", "dsw/managed": "true", "dsw/image": "saved-kdel00001"})
    await create(emulator, running)
    owner = {"name": "alice", "scopes": [rbac.scope(Action.publish_image, "vision")]}

    # a member who may not publish (so not delete): refused, nothing touched
    with pytest.raises(actions.OpError) as err:
        await asyncio.to_thread(actions.delete_image, {"name": "bob", "scopes": []}, "vision", "saved-kdel00001")
    assert err.value.status == 403
    # an instance runs from it: refused naming the pod, the image stays in the registry
    with pytest.raises(actions.OpError) as err:
        await asyncio.to_thread(actions.delete_image, owner, "vision", "saved-kdel00001")
    assert err.value.status == 409 and "jupyter-bob-from-saved" in err.value.message
    manifest = f"http://{registry.host}/v2/dsw/vision/k-del/gone/manifests/saved-kdel00001"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"}
    assert requests.get(manifest, headers=accept, timeout=5).status_code == 200

    # the pod stopped (a finished pod does not count): deleted from the registry and the list
    url = f"{str(emulator.url).rstrip('/')}/api/v1/namespaces/dsw-vision/pods/jupyter-bob-from-saved"
    r = await asyncio.to_thread(requests.delete, url, timeout=10)
    assert r.status_code in (200, 202), r.text
    done = await asyncio.to_thread(actions.delete_image, owner, "vision", "saved-kdel00001")
    assert done == {"deleted": "saved-kdel00001", "image": ref, "registry": "ok"}, json.dumps(done)
    assert requests.get(manifest, headers=accept, timeout=5).status_code == 404
    with sessions(db)() as s:
        assert s.get(SavedImage, "saved-kdel00001") is None
