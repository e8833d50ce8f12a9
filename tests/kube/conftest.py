"""Fixtures for the Kubernetes backend: a kmock API emulator with its gaps filled, a fake
kubelet, and DSWKubeSpawner instances wired to them through kubespawner's real client.

What the emulator (kmock 0.8) does not do, and what these fixtures do instead:
  1. kubernetes_asyncio sends ``?watch=True``; kmock recognises only ``watch=true``
     -> ``DSWEmulator.__call__`` rewrites the query.
  2. kmock adds no namespace/uid/resourceVersion/creationTimestamp to created objects,
     and no ``status`` to pods (kubespawner reads ``status.phase``)
     -> ``DSWEmulator._handle`` fills them in like an API server would.
  3. Nothing runs pods -> the ``kubelet`` fixture watches pods and patches their status
     to Running with a podIP (or to ErrImagePull for images it is told are missing),
     posting the Events a kubelet would.
  5. kmock reads ``/api/v1/namespaces[/name]`` as a namespace prefix, so the Namespace
     resource itself cannot be served -> ``DSWEmulator`` keeps namespaces in a dict.
  6. kmock reports Kubernetes v1.26 from /version (the chart needs >= 1.30)
     -> ``DSWEmulator`` answers /version with ``KUBE_VERSION``.
  7. kmock's /api/v1 says groupVersion "/v1", so Helm finds no core kinds
     -> ``DSWEmulator`` serves /api/v1 discovery itself.
  4. A watch replays current objects as ADDED and ignores resourceVersion: a change made
     between a reflector's list and its watch is lost (a stop right after a hub restart
     then never sees its pod go) -> ``DSWEmulator`` numbers every change, answers lists
     with the current number, and a watch from a number replays the changes after it.
     Selectors stay ignored: kubespawner's reflectors cope with extra objects.
  8. kmock serves no pod log subresource (a kubelet's) -> ``DSWEmulator`` answers
     ``/pods/<name>/log`` from ``pod_log_source``, which a fake kubelet that runs pods sets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import re
import uuid
from pathlib import Path
from unittest.mock import Mock

import kmock
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from jupyterhub.objects import Hub, Server
from kmock._internal import aiobus, enums

from tests.conftest import BASE_CATALOG

from .validation import KUBE_VERSION

RESOURCES = {
    "v1/pods": dict(namespaced=True, kind="Pod", subresources={"status"}),
    "v1/events": dict(namespaced=True, kind="Event"),
    "v1/persistentvolumeclaims": dict(namespaced=True, kind="PersistentVolumeClaim"),
    "v1/secrets": dict(namespaced=True, kind="Secret"),
    "v1/services": dict(namespaced=True, kind="Service"),
    "v1/configmaps": dict(namespaced=True, kind="ConfigMap"),
    "v1/serviceaccounts": dict(namespaced=True, kind="ServiceAccount"),
    "apps/v1/deployments": dict(namespaced=True, kind="Deployment"),
    "apps/v1/daemonsets": dict(namespaced=True, kind="DaemonSet"),
    "rbac.authorization.k8s.io/v1/roles": dict(namespaced=True, kind="Role"),
    "rbac.authorization.k8s.io/v1/rolebindings": dict(namespaced=True, kind="RoleBinding"),
    "rbac.authorization.k8s.io/v1/clusterroles": dict(namespaced=False, kind="ClusterRole"),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": dict(namespaced=False, kind="ClusterRoleBinding"),
    "networking.k8s.io/v1/networkpolicies": dict(namespaced=True, kind="NetworkPolicy"),
    "networking.k8s.io/v1/ingresses": dict(namespaced=True, kind="Ingress"),
    "policy/v1/poddisruptionbudgets": dict(namespaced=True, kind="PodDisruptionBudget"),
}


VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
CORE_DISCOVERY = [
    {"name": key.split("/")[-1], "kind": info["kind"], "namespaced": info["namespaced"], "verbs": VERBS,
     "singularName": info["kind"].lower()}
    for key, info in RESOURCES.items() if key.startswith("v1/")
] + [{"name": "namespaces", "kind": "Namespace", "namespaced": False, "verbs": VERBS, "singularName": "namespace"}]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DSWEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with gaps 1 and 2 filled (see the module docstring)."""

    _versions = itertools.count(1)
    _ns_path = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?/?$")
    _log_path = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/log$")
    #: gap 8: pod logs come from a kubelet; a fake kubelet that runs pods sets this to
    #: ``async (namespace, pod) -> str | None`` (None: no such container, 404)
    pod_log_source = None

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.namespaces: dict[str, dict] = {}
        # gap 4: every change to any resource, numbered: (number, resource, watch event)
        self.history: list[tuple[int, object, dict]] = []
        emulator = self

        class RecordingBus(aiobus.Bus):
            resource = None

            async def put(self, *items):
                for item in items:
                    emulator.history.append((len(emulator.history) + 1, self.resource, item))
                await super().put(*items)

        class Buses(collections.defaultdict):
            def __missing__(self, resource):
                bus = self[resource] = RecordingBus()
                bus.resource = resource
                return bus

        self._buses = Buses()

    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(len(self.history))  # gap 4
        return result

    async def _serve_watch(self, request):
        since = request.params.get("resourceVersion", "")
        if not since.isdigit() or since == "0":
            async for event in super()._serve_watch(request):
                yield event
            return
        yield b""  # start streaming (as kmock does)
        async with self._lock:  # changes and their bus events happen under this lock
            mark = await self._buses[request.resource].mark()
            backlog = [e for n, res, e in self.history if n > int(since) and res == request.resource]

        def wanted(event):
            return request.namespace is None or event["object"]["metadata"].get("namespace") == request.namespace

        for event in backlog:
            if wanted(event):
                yield event
        async for event in mark:
            if wanted(event):
                yield event

    async def _serve_namespace(self, raw_request, name: str | None):
        # Gap 5: a minimal Namespace store (create, get, list, delete).
        if name is None and raw_request.method == "POST":
            body = await raw_request.json()
            name = body["metadata"]["name"]
            if name in self.namespaces:
                return web.json_response({"kind": "Status", "apiVersion": "v1", "code": 409,
                                          "reason": "AlreadyExists", "status": "Failure",
                                          "message": f'namespaces "{name}" already exists'}, status=409)
            body["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(),
                                    resourceVersion=str(next(self._versions)))
            body["status"] = {"phase": "Active"}
            self.namespaces[name] = body
            return web.json_response(body, status=201)
        if name is None:
            return web.json_response({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {},
                                      "items": list(self.namespaces.values())})
        if name not in self.namespaces:
            return web.json_response({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound",
                                      "status": "Failure", "message": f'namespaces "{name}" not found'},
                                     status=404)
        if raw_request.method == "DELETE":
            return web.json_response(self.namespaces.pop(name))
        return web.json_response(self.namespaces[name])

    async def __call__(self, raw_request):
        if raw_request.path == "/version":  # gap 6
            major, minor, _ = KUBE_VERSION.split(".")
            return web.json_response({"major": major, "minor": minor, "gitVersion": f"v{KUBE_VERSION}",
                                      "platform": "linux/amd64"})
        if raw_request.path.rstrip("/") == "/api/v1":  # gap 7
            return web.json_response({"apiVersion": "v1", "kind": "APIResourceList", "groupVersion": "v1",
                                      "resources": CORE_DISCOVERY})
        match = self._ns_path.match(raw_request.path)
        if match:
            return await self._serve_namespace(raw_request, match["name"])
        match = self._log_path.match(raw_request.path)
        if match:  # gap 8
            text = await self.pod_log_source(match["namespace"], match["name"]) if self.pod_log_source else None
            if text is None:
                return web.json_response({"kind": "Status", "apiVersion": "v1", "code": 400, "reason": "BadRequest",
                                          "status": "Failure", "message": "container is not running"}, status=400)
            return web.Response(text=text, content_type="text/plain")
        # Gap 1: kubernetes_asyncio's watch=True is a watch; kmock only knows watch=true.
        if raw_request.query.get("watch") == "True":
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)

    async def _handle(self, request):
        # Gap 2: the metadata and initial status an API server adds.
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == enums.action.CREATE:
                meta = data.setdefault("metadata", {})
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["resourceVersion"] = str(next(self._versions))
                if request.resource.plural == "pods":
                    data.setdefault("status", {"phase": "Pending"})
            elif request.action == enums.action.UPDATE:
                data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)


def declare(emulator: kmock.KubernetesEmulator) -> None:
    for key, info in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(**info, verbs=VERBS)


@pytest_asyncio.fixture
async def emulator():
    async with DSWEmulator() as handler, kmock.Server(handler):
        declare(handler)
        yield handler


def live_objects(emulator, plural: str) -> list[dict]:
    """Objects of a resource that exist now (not deleted)."""
    out = []
    for (resource, _ns, _name), obj in list(emulator.objects.items()):
        if resource.plural == plural and not obj.deleted:
            out.append(obj.raw)
    return out


class FakeKubelet:
    """Gap 3: moves pods along as a kubelet would, through the HTTP API."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.missing_images: set[str] = set()
        self.seen: set[str] = set()
        self._event_ids = itertools.count(1)

    async def run(self):
        async with self.emulator.get("/api/v1/pods", params={"watch": "true"}) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                pod = event["object"]
                uid = pod["metadata"].get("uid")
                if event["type"] == "ADDED" and uid not in self.seen and not pod.get("status", {}).get("podIP"):
                    self.seen.add(uid)
                    await self.handle(pod)

    async def event(self, pod: dict, reason: str, message: str, type_: str = "Normal") -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name}.{next(self._event_ids)}", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": ns, "uid": pod["metadata"]["uid"]},
                "reason": reason, "message": message, "type": type_,
                "lastTimestamp": _now(), "eventTime": None}
        async with self.emulator.post(f"/api/v1/namespaces/{ns}/events", json=body) as resp:
            assert resp.status < 300, await resp.text()

    async def patch_status(self, pod: dict, status: dict) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        async with self.emulator.patch(f"/api/v1/namespaces/{ns}/pods/{name}/status",
                                       json={"status": status}) as resp:
            assert resp.status < 300, await resp.text()

    async def handle(self, pod: dict) -> None:
        container = pod["spec"]["containers"][0]
        image = container["image"]
        await self.event(pod, "Scheduled", f"Successfully assigned {pod['metadata']['namespace']}/"
                                           f"{pod['metadata']['name']} to fake-node")
        await self.event(pod, "Pulling", f'Pulling image "{image}"')
        if image in self.missing_images:
            message = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                       "not found")
            await self.event(pod, "Failed", f'Failed to pull image "{image}": {message}', "Warning")
            await self.patch_status(pod, {"phase": "Pending", "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0, "image": image, "imageID": "",
                "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}]})
            return
        await self.event(pod, "Pulled", f'Successfully pulled image "{image}"')
        await self.event(pod, "Started", "Started container notebook")
        await self.patch_status(pod, {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "192.168.0.10",
                                      "containerStatuses": [{
                                          "name": container["name"], "ready": True, "restartCount": 0,
                                          "image": image, "imageID": f"{image}@sha256:{'0' * 64}",
                                          "state": {"running": {"startedAt": _now()}}}]})


@pytest_asyncio.fixture
async def kubelet(emulator):
    fake = FakeKubelet(emulator)
    task = asyncio.create_task(fake.run())
    yield fake
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


KUBE_CATALOG = {
    **BASE_CATALOG,
    "images": [*BASE_CATALOG["images"],
               {"id": "nb-missing", "image": "registry.example.com/vision/missing:1",
                "pull_secret": "vision-registry", "workspaces": ["vision"]}],
}


@pytest.fixture
def catalog_path(tmp_path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(KUBE_CATALOG))
    return path


class MockUser(Mock):
    """The few user attributes a spawner reads (as kubespawner's own tests do)."""

    name = "alice"
    server = Server()

    def __init__(self, **kwargs):
        super().__init__()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def escaped_name(self):
        return self.name

    @property
    def url(self):
        return self.server.url


def kubeconfig_for(emulator) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": str(emulator.url).rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}],
    })


class MockOrmSpawner(Mock):
    name = ""
    server = None


@pytest.fixture
def state_db_url(tmp_path) -> str:
    """The DSW state database (quota reservations) of one test: a temp sqlite file."""
    return f"sqlite:///{tmp_path}/dsw-state.sqlite"


@pytest_asyncio.fixture
async def make_spawner(emulator, catalog_path, state_db_url, tmp_path, monkeypatch):
    """Build DSWKubeSpawner instances against the emulator (inside the running loop)."""
    from traitlets.config import Config

    from spawner_ext.kube.spawner import DSWKubeSpawner

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(emulator))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # kubernetes_asyncio reads KUBECONFIG once, at import: point its default there too.
    import kubernetes_asyncio.config.kube_config as kube_config
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def make(user="alice", name="", options=None, **config):
        cfg = Config()
        cfg.DSWKubeSpawner.catalog_path = str(catalog_path)
        # quota reservations (the mixin's admit/release) in a database of this test only
        cfg.DSWKubeSpawner.state_db_url = state_db_url
        cfg.DSWKubeSpawner.k8s_api_host = str(emulator.url).rstrip("/")
        cfg.DSWKubeSpawner.failure_check_interval = 0.05
        cfg.DSWKubeSpawner.start_timeout = 30  # a cap so a broken spawner fails instead of hanging
        for key, value in config.items():
            setattr(cfg.DSWKubeSpawner, key, value)
        orm_spawner = MockOrmSpawner()
        orm_spawner.name = name  # (Mock(name=...) would name the mock instead)
        spawner = DSWKubeSpawner(hub=Hub(), user=MockUser(name=user), orm_spawner=orm_spawner,
                                 config=cfg, api_token="abc123", oauth_client_id="unused")
        spawner.user_options = options or {}
        return spawner

    yield make
    await DSWKubeSpawner._stop_all_reflectors()
