"""DSWLocalSpawner: instances as containers on one machine (Docker or podman).

Only the engine steps of the shared lifecycle (``spawner_ext/lifecycle.py``, which owns
options -> spec, admission, the storage check, progress and release): create-arguments
come from ``container.py``; this module talks to the engine (off the event loop) and
mounts OSS with s3fs on the host (``storage/local.py``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Bool, Integer, Unicode, default

from ..lifecycle import LifecycleMixin
from ..spec import InstanceSpec, Mount
from ..storage import local as storage_local
from ..storage.credentials import Keys, StorageError, local_keys
from . import container

_clients: dict[tuple[str, int], docker.DockerClient] = {}
#: Docker Engine API version the spawner speaks (podman 4 serves 1.41; Docker 20.10+ at least it)
ENGINE_API_VERSION = "1.41"


class DSWLocalSpawner(LifecycleMixin, Spawner):
    """Spawn Notebook/VSCode/Terminal instances as engine containers."""

    engine_url = Unicode(
        "unix:///var/lib/dsw-hub/podman.sock", config=True,
        help="Docker Engine API endpoint (Docker's socket or podman's Docker-compatible service).",
    )
    engine_timeout = Integer(60, config=True, help="Seconds before an engine API call is abandoned.")
    engine_threads = Integer(8, config=True, help="Threads for blocking engine calls (shared by all spawners).")
    host_ip = Unicode("127.0.0.1", config=True, help="Host address the instance's port is published on.")
    network = Unicode("", config=True, help="Engine network for instances; empty: the engine's default bridge.")
    attach_gpus = Bool(
        True, config=True,
        help="Request the instance type's GPUs from the engine (NVIDIA device requests). Turn off only on "
             "machines without GPUs where GPU types are used to exercise quotas.",
    )
    stop_timeout = Integer(5, config=True, help="Seconds a server gets to shut down before it is killed.")

    storage_state = Unicode(
        config=True,
        help="Folder holding s3fs mount points (<state>/mounts) and their 0600 passwd files "
             "(<state>/storage-credentials). Default: $DSW_STATE.",
    )
    s3fs_path = Unicode("s3fs", config=True, help="The s3fs FUSE client (Debian package s3fs).")
    storage_uid = Integer(1000, config=True, help="Owner of files in OSS mounts (the image's jovyan).")
    storage_gid = Integer(100, config=True, help="Group of files in OSS mounts (the image's users group).")

    @default("storage_state")
    def _default_storage_state(self):
        return str(storage_local.default_state())

    @property
    def storage_layout(self) -> storage_local.Layout:
        return storage_local.Layout.under(self.storage_state)

    container_id = Unicode("")
    host_port = Integer(0)

    _executor: ThreadPoolExecutor | None = None

    @default("start_timeout")
    def _default_start_timeout(self):
        return 120

    # --- engine access (blocking calls run in a shared thread pool) ---------
    @property
    def client(self) -> docker.DockerClient:
        key = (self.engine_url, self.engine_timeout)
        if key not in _clients:
            # the API version is fixed, not asked: asking is a blocking round trip (on the event
            # loop, at first use) and fails outright while the engine's API service is down
            _clients[key] = docker.DockerClient(base_url=self.engine_url, timeout=self.engine_timeout,
                                                version=ENGINE_API_VERSION)
        return _clients[key]

    async def _run(self, fn, *args, **kwargs) -> Any:
        """A blocking engine call in the shared pool. An engine that cannot be reached becomes a
        503 that says so (a bare connection error would reach the member as "error")."""
        if DSWLocalSpawner._executor is None:
            DSWLocalSpawner._executor = ThreadPoolExecutor(self.engine_threads, thread_name_prefix="dsw-engine")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(DSWLocalSpawner._executor, lambda: fn(*args, **kwargs))
        except requests.exceptions.ConnectionError as exc:
            raise web.HTTPError(503, log_message=f"the container engine at {self.engine_url} cannot be reached "
                                                 f"({type(exc).__name__}); try again when it is back") from None

    # --- state -----------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.container_id:
            state["container_id"] = self.container_id
            state["host_port"] = self.host_port
        return state

    def load_state(self, state):
        super().load_state(state)
        self.container_id = state.get("container_id", "")
        self.host_port = state.get("host_port", 0)

    def clear_state(self):
        super().clear_state()
        self.container_id = ""
        self.host_port = 0

    # --- storage: NAS binds host folders, OSS is mounted with s3fs on the host ---------------
    def engine_check_mounts(self, spec: InstanceSpec) -> None:
        storage_local.bind_spec(spec, self.storage_layout)  # NFS-only entries cannot run here

    async def engine_check_nas(self, mount: Mount) -> None:
        if mount.type not in ("host", "nfs"):
            return
        folder = mount.host_source if mount.type == "nfs" else mount.source
        problem = await self._run(storage_local.nas_folder_problem, folder, mount.host_root)
        if problem:
            raise StorageError(f"storage {mount.storage!r}: {problem}")

    async def engine_oss_keys(self, mount: Mount, spec: InstanceSpec) -> Keys:
        return local_keys(mount)

    def engine_mount_how(self, mount: Mount) -> str:
        if mount.type == "oss":
            return "s3fs on the host"
        return f"host folder {mount.host_source if mount.type == 'nfs' else mount.source}"

    async def engine_mount(self, spec: InstanceSpec, mount: Mount, keys: Keys | None) -> None:
        if mount.type != "oss":
            return  # a NAS folder is bound as it is
        try:
            await self._run(storage_local.mount_oss, self.storage_layout, self.user.name, self.name or "", mount,
                            keys, s3fs=self.s3fs_path, uid=self.storage_uid, gid=self.storage_gid,
                            timeout=self.storage_timeout)
        except StorageError as exc:
            raise web.HTTPError(500, log_message=str(exc), reason=None) from None

    async def engine_release_storage(self) -> list[str]:
        removed = await self._run(storage_local.release_instance, self.storage_layout,
                                  self.user.name, self.name or "")
        return [("credential file " if "/storage-credentials/" in p else "mount ") + p for p in removed]

    # --- prepare and create ------------------------------------------------------------------
    @property
    def _container_name(self) -> str:
        return container.container_name(self.user.name, self.name)

    async def engine_prepare(self, spec: InstanceSpec) -> None:
        # independent engine calls, concurrently (each is a round trip to the engine); what a
        # crashed start of this instance left (container, mounts) goes first
        await asyncio.gather(self._ensure_image(spec.image), self._ensure_volume(spec),
                             self._remove_stale(self._container_name), self.engine_release_storage())

    async def engine_create(self, spec: InstanceSpec):
        name = self._container_name
        # Inside the container the server binds 0.0.0.0:8888; the engine publishes it on host_ip.
        self.ip, self.port = "0.0.0.0", container.SERVER_PORT
        kwargs = container.create_kwargs(storage_local.bind_spec(spec, self.storage_layout), name=name,
                                         cmd=[*self.cmd, *self.get_args()], env=self.get_env(),
                                         host_ip=self.host_ip, network=self.network or None,
                                         attach_gpus=self.attach_gpus)
        self.emit(40, f"Starting container {name} from {spec.image}")
        created = await self._run(self.client.api.create_container, **kwargs)
        self.container_id = created["Id"]
        await self._run(self.client.api.start, self.container_id)
        self.host_port = await self._published_port()
        return (self.host_ip, self.host_port)

    async def engine_wait_ready(self, spec: InstanceSpec, url) -> None:
        self.emit(60, "Waiting for the server to answer")
        await self.probe_until_up(f"http://{self.host_ip}:{self.host_port}{self.server.base_url}api",
                                  exit_detail=self._log_tail)

    async def engine_output(self) -> str:
        return (await self._run(self.client.api.logs, self.container_id, stdout=True, stderr=True)
                ).decode(errors="replace")

    async def _log_tail(self) -> str:
        logs = await self._run(self.client.api.logs, self.container_id, tail=15)
        return " | ".join(logs.decode(errors="replace").strip().splitlines()[-5:])

    async def _ensure_image(self, ref: str) -> None:
        try:
            await self._run(self.client.api.inspect_image, ref)
            return
        except ImageNotFound:
            pass
        self.emit(10, f"Pulling image {ref}")
        reason = ""
        try:
            # The engine reports pull failures inside the stream, not as an HTTP error.
            for line in await self._run(lambda: list(self.client.api.pull(ref, stream=True, decode=True))):
                if isinstance(line, dict) and line.get("error"):
                    reason = line["error"]
            await self._run(self.client.api.inspect_image, ref)
        except (APIError, DockerException) as exc:
            reason = reason or getattr(exc, "explanation", None) or str(exc)
            raise web.HTTPError(500, log_message=f"image {ref} is not on this machine and could not be pulled "
                                           f"({reason}); build managed images with images/build.sh") from None

    async def _ensure_volume(self, spec: InstanceSpec) -> None:
        if not spec.home:
            return
        try:
            await self._run(self.client.api.inspect_volume, spec.home.source)
        except NotFound:
            self.emit(20, f"Creating home volume {spec.home.source}")
            try:
                await self._run(self.client.api.create_volume, spec.home.source, labels=spec.home_labels())
            except APIError:
                # another first spawn of this member created it meanwhile (podman answers 500)
                await self._run(self.client.api.inspect_volume, spec.home.source)

    async def _remove_stale(self, name: str) -> None:
        """A container left by a crash under our name would block the new one."""
        if await self._remove_managed(name):
            self.log.info("%s: removed stale container %s", self._log_name, name)

    async def _remove_managed(self, ref: str) -> bool:
        """Force-remove a DSW container by id or name; never one DSW did not make."""
        try:
            info = await self._run(self.client.api.inspect_container, ref)
        except NotFound:
            return False
        if info["Config"]["Labels"].get(container.MANAGED_LABEL) != "true":
            raise web.HTTPError(409, log_message=f"a container named {info['Name'].lstrip('/')} exists and is not "
                                           "managed by DSW Hub")
        try:
            await self._run(self.client.api.remove_container, info["Id"], force=True)
        except NotFound:
            return False
        return True

    async def _published_port(self) -> int:
        info = await self._run(self.client.api.inspect_container, self.container_id)
        bindings = info["NetworkSettings"]["Ports"].get(f"{container.SERVER_PORT}/tcp") or []
        if not bindings:
            raise web.HTTPError(500, log_message="the engine did not publish the server port")
        return int(bindings[0]["HostPort"])

    # --- poll and delete -----------------------------------------------------------------------
    async def engine_poll(self):
        ref = self.container_id
        if not ref:
            return 0
        try:
            info = await self._run(self.client.api.inspect_container, ref)
        except NotFound:
            return 0
        except (DockerException, OSError, web.HTTPError) as exc:  # 503: engine unreachable
            self.log.warning("cannot reach the engine to poll %s: %s", self._log_name, exc)
            return None
        state = info["State"]
        if state.get("Running"):
            return None
        return state.get("ExitCode") or 1

    async def engine_delete(self, now: bool) -> list[str]:
        """Stop (unless ``now``) and remove this instance's container, found by id or by its
        name (the name is all that is left when the state was lost). Never one DSW did not make."""
        released = []
        for ref in dict.fromkeys(r for r in (self.container_id, self._container_name) if r):
            try:
                info = await self._run(self.client.api.inspect_container, ref)
            except NotFound:
                continue
            if info["Config"]["Labels"].get(container.MANAGED_LABEL) != "true":
                self.log.warning("%s: container %s is not managed by DSW Hub: left alone", self._log_name, ref)
                continue
            state = info["State"]
            try:
                if state.get("Running") and not now:
                    await self._run(self.client.api.stop, info["Id"], timeout=self.stop_timeout)
                await self._run(self.client.api.remove_container, info["Id"], force=True)
            except NotFound:
                continue
            how = "running" if state.get("Running") else f"exited with {state.get('ExitCode')}"
            released.append(f"container {info['Name'].lstrip('/')} ({how})")
        self.container_id = ""
        return released
