"""The same lifecycle tests against both backends, each behind a real JupyterHub + proxy:

* ``local``: DSWLocalSpawner on podman's Docker API (hub_config/jupyterhub_config.py as is);
* ``kube``:  DSWKubeSpawner on the kmock emulator, which stands in for a Kubernetes API server
  (none can run here). A fake kubelet runs each pod as a podman container from the pod's own
  image, command and environment, reports the container's IP as the pod IP, and reports the
  pod Failed (container terminated) when the container dies, as a kubelet would.

Users and servers start with ``lc-`` so no other test's clean-up touches them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import docker
import pytest
import yaml
from sqlalchemy import select

from spawner_ext.catalog.db import Reservation, sessions
from spawner_ext.local.container import container_name
from tests.integration.conftest import engine, engine_url, make_catalog  # noqa: F401 (fixtures)
from tests.integration.hubproc import Hub, free_port
from tests.kube.conftest import DSWEmulator, FakeKubelet, _now, declare, kubeconfig_for, live_objects

POLL_INTERVAL = 2  # seconds (DSW_POLL_INTERVAL): how soon the hub notices an instance that died
SERVER_LIMIT = 3  # DSW_SERVER_LIMIT: named servers per user
KUBELET_LABEL = "dsw-test/kubelet"
USERS = {"lc-bob": "developer", "lc-ann": "developer"}


OSS_SECRET = "lc-oss"
OSS_KEYS = ("lc-access", "lc-secret-key")


def lifecycle_catalog(tmp: Path, silent_endpoint: str) -> Path:
    """``lc-slow``: an OSS entry whose endpoint accepts connections and never answers, so its
    access check is refused only after the storage timeout (a refusal that comes late)."""
    return make_catalog(tmp, platform_admins=["lc-root"], workspaces=[
        {"id": "lcws", "members": dict(USERS), "resource_groups": ["cpu"]}], storage=[
        {"id": "lc-slow", "workspaces": ["lcws"], "mount_path": "/mnt/slow", "access": "ro",
         "oss": {"endpoint": silent_endpoint, "bucket": "lc-bucket",
                 "credentials": {"secret": OSS_SECRET, "env": "LC_OSS"}}}])


@pytest.fixture(scope="module")
def silent_endpoint():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class PodmanKubelet(FakeKubelet):
    """Runs pods as podman containers (see the module docstring)."""

    def __init__(self, emulator, engine: docker.DockerClient):
        super().__init__(emulator)
        self.engine = engine
        self.containers: dict[str, object] = {}  # "<ns>/<pod>" -> container

    async def run(self):
        async with self.emulator.get("/api/v1/pods", params={"watch": "true"}) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                pod = event["object"]
                meta = pod["metadata"]
                key = f"{meta.get('namespace')}/{meta['name']}"
                if event["type"] == "DELETED":
                    await asyncio.to_thread(self.remove, key)
                elif event["type"] == "ADDED" and meta.get("uid") not in self.seen \
                        and not pod.get("status", {}).get("podIP"):
                    self.seen.add(meta["uid"])
                    asyncio.ensure_future(self.handle(pod))

    async def logs(self, namespace: str, name: str) -> str | None:
        """What a kubelet serves as the pod log: the container's output."""
        c = self.containers.get(f"{namespace}/{name}")
        if c is None:
            return None
        return (await asyncio.to_thread(c.logs, stdout=True, stderr=True)).decode(errors="replace")

    def remove(self, key: str) -> None:
        c = self.containers.pop(key, None)
        if c is not None:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

    async def handle(self, pod: dict) -> None:
        spec = pod["spec"]["containers"][0]
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        env = {e["name"]: e["value"] for e in spec.get("env", []) if "value" in e}
        await self.event(pod, "Scheduled", f"Successfully assigned {key} to podman")
        container = await asyncio.to_thread(
            self.engine.containers.run, spec["image"], command=spec.get("args"),
            entrypoint=spec.get("command"), environment=env, working_dir=spec.get("workingDir"),
            name=f"kubelet-{meta['namespace']}-{meta['name']}", labels={KUBELET_LABEL: "1"}, detach=True)
        self.containers[key] = container
        await asyncio.to_thread(container.reload)
        await self.event(pod, "Started", f"Started container {spec['name']}")
        await self.patch_status(pod, {"phase": "Running", "podIP": container.attrs["NetworkSettings"]["IPAddress"],
                                      "containerStatuses": [{"name": spec["name"], "ready": True, "restartCount": 0,
                                                             "image": spec["image"], "imageID": spec["image"],
                                                             "state": {"running": {"startedAt": _now()}}}]})
        while self.containers.get(key) is container:  # report the container's death as the pod's
            await asyncio.sleep(0.3)
            try:
                await asyncio.to_thread(container.reload)
            except docker.errors.NotFound:
                return
            if container.status == "exited":
                code = container.attrs["State"]["ExitCode"]
                await self.patch_status(pod, {"phase": "Failed", "containerStatuses": [{
                    "name": spec["name"], "ready": False, "restartCount": 0, "image": spec["image"],
                    "imageID": spec["image"], "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]})
                return


class EmulatorThread:
    """The emulator and the kubelet on their own event loop, so the test body can be plain code."""

    def __init__(self, engine: docker.DockerClient):
        self.engine = engine
        self.ready = threading.Event()
        self.url = ""

    def __enter__(self):
        import kmock

        async def main():
            self.loop = asyncio.get_running_loop()
            self.stopping = asyncio.Event()
            async with DSWEmulator() as handler, kmock.Server(handler, port=free_port()):
                declare(handler)
                self.emulator = handler
                self.url = str(handler.url).rstrip("/")
                self.kubelet = PodmanKubelet(handler, self.engine)
                handler.pod_log_source = self.kubelet.logs
                task = asyncio.ensure_future(self.kubelet.run())
                self.ready.set()
                await self.stopping.wait()
                task.cancel()
                for key in list(self.kubelet.containers):
                    await asyncio.to_thread(self.kubelet.remove, key)

        self.thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the emulator did not start"
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def pods(self) -> dict[str, dict]:
        async def read():
            return {p["metadata"]["name"]: p for p in live_objects(self.emulator, "pods")}
        return self.call(read())

    def put_secret(self, namespace: str, name: str, keys: tuple[str, str]) -> None:
        """What the platform team does: an OSS entry's Secret in the workspace namespace."""
        enc = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"accessKeyID": enc(keys[0]), "secretAccessKey": enc(keys[1])}}

        async def put():
            async with self.emulator.post(f"/api/v1/namespaces/{namespace}/secrets", json=body) as resp:
                assert resp.status < 300, await resp.text()
        self.call(put())

    def delete_pod(self, namespace: str, name: str) -> None:
        async def delete():
            async with self.emulator.delete(f"/api/v1/namespaces/{namespace}/pods/{name}") as resp:
                assert resp.status < 300, await resp.text()
        self.call(delete())


class Backend:
    """What a test needs to know of one backend: its hub, and how to see or kill an instance."""

    name = ""
    hub: Hub

    def reservations(self) -> set[tuple[str, str]]:
        with sessions(f"sqlite:///{self.hub.state}/dsw.sqlite")() as s:
            return {(r.user, r.server) for r in s.execute(select(Reservation)).scalars()}

    def last_stop(self, user: str, server: str) -> tuple[str, str, str]:
        """(reason, by, detail) of the instance's last stop, as the workspace page shows it."""
        from spawner_ext import instance_record
        row = instance_record.get(sessions(f"sqlite:///{self.hub.state}/dsw.sqlite"), user, server)
        return (row.last_stop_reason, row.last_stop_by, row.last_stop_detail) if row else ("", "", "")

    def instance_exists(self, user: str, server: str) -> bool:
        raise NotImplementedError

    def kill(self, user: str, server: str) -> None:
        """The instance dies on its own (its main process is killed)."""
        raise NotImplementedError

    def container(self, user: str, server: str):
        raise NotImplementedError

    def run(self, user: str, server: str, cmd: list[str]) -> str:
        """A command in the instance as its user (what a terminal in it would show)."""
        code, out = self.container(user, server).exec_run(cmd, user="1000:100")
        assert code == 0, out.decode(errors="replace")
        return out.decode(errors="replace")


class LocalBackend(Backend):
    name = "local"

    def __init__(self, hub: Hub, engine: docker.DockerClient):
        self.hub, self.engine = hub, engine

    def instance_exists(self, user, server):
        return bool(self.engine.containers.list(all=True, filters={"name": f"^{container_name(user, server)}$"}))

    def kill(self, user, server):
        self.engine.containers.get(container_name(user, server)).kill()

    def container(self, user, server):
        return self.engine.containers.get(container_name(user, server))


class KubeBackend(Backend):
    name = "kube"

    def __init__(self, hub: Hub, cluster: EmulatorThread):
        self.hub, self.cluster = hub, cluster

    @staticmethod
    def pod_name(user, server):
        return f"dsw-{user}--{server}"

    def instance_exists(self, user, server):
        return self.pod_name(user, server) in self.cluster.pods()

    def kill(self, user, server):
        self.container(user, server).kill()

    def container(self, user, server):
        return self.cluster.kubelet.containers[f"dsw-lcws/{self.pod_name(user, server)}"]


def cleanup(engine: docker.DockerClient) -> None:
    for c in engine.containers.list(all=True):
        if c.labels.get("dsw/user", "").startswith("lc-") or c.labels.get(KUBELET_LABEL):
            c.remove(force=True)
    for v in engine.volumes.list(filters={"label": "dsw/managed=true"}):
        if v.attrs.get("Labels", {}).get("dsw/user", "").startswith("lc-"):
            v.remove(force=True)


HUB_ENV = {"DSW_POLL_INTERVAL": str(POLL_INTERVAL), "DSW_SERVER_LIMIT": str(SERVER_LIMIT),
           "LC_OSS_ACCESS_KEY_ID": OSS_KEYS[0], "LC_OSS_SECRET_ACCESS_KEY": OSS_KEYS[1]}


@pytest.fixture(scope="module", params=["local", "kube"])
def backend(request, tmp_path_factory, engine, engine_url, silent_endpoint):
    tmp = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    cleanup(engine)
    catalog = lifecycle_catalog(tmp, silent_endpoint)
    with contextlib.ExitStack() as stack:
        if request.param == "local":
            hub = Hub(tmp / "state", catalog, engine_url, extra_env=HUB_ENV)
            b = LocalBackend(hub, engine)
        else:
            cluster = stack.enter_context(EmulatorThread(engine))
            cluster.put_secret("dsw-lcws", OSS_SECRET, OSS_KEYS)
            kubeconfig = tmp / "kubeconfig"
            kubeconfig.write_text(yaml.safe_dump(yaml.safe_load(kubeconfig_for(cluster.emulator))))
            hub = Hub(tmp / "state", catalog, engine_url,
                      extra_env={**HUB_ENV, "KUBECONFIG": str(kubeconfig), "DSW_TEST_K8S_API": cluster.url},
                      config=Path(__file__).parent / "kube_hub_config.py")
            b = KubeBackend(hub, cluster)
        hub.start()
        stack.callback(hub.stop)
        yield b
    cleanup(engine)


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until true; the deadline only keeps a broken build from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")
