"""DSWLocalSpawner: instances as containers on one machine (Docker or podman).

Thin glue: the spec comes from the shared core, create-arguments from
``container.py``; this module only talks to the engine, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from jupyterhub.spawner import Spawner
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Float, Integer, Unicode, default

from ..catalog_spawner import CatalogSpawnerMixin
from ..spec import InstanceSpec
from ..storage import local as storage_local
from ..storage.credentials import Keys, StorageError, check_oss_async, local_keys
from . import container

_clients: dict[tuple[str, int], docker.DockerClient] = {}


class DSWLocalSpawner(CatalogSpawnerMixin, Spawner):
    """Spawn Notebook/VSCode/Terminal instances as engine containers."""

    engine_url = Unicode(
        "unix:///var/lib/dsw-hub/podman.sock", config=True,
        help="Docker Engine API endpoint (Docker's socket or podman's Docker-compatible service).",
    )
    engine_timeout = Integer(60, config=True, help="Seconds before an engine API call is abandoned.")
    engine_threads = Integer(8, config=True, help="Threads for blocking engine calls (shared by all spawners).")
    host_ip = Unicode("127.0.0.1", config=True, help="Host address the instance's port is published on.")
    network = Unicode("", config=True, help="Engine network for instances; empty: the engine's default bridge.")
    ready_interval = Float(0.02, config=True, help="Seconds between readiness probes while a server starts.")
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
    storage_timeout = Float(15, config=True, help="Seconds for the OSS access check and for each s3fs mount.")

    @default("storage_state")
    def _default_storage_state(self):
        return str(storage_local.default_state())

    @property
    def storage_layout(self) -> storage_local.Layout:
        return storage_local.Layout.under(self.storage_state)

    container_id = Unicode("")
    host_port = Integer(0)

    _executor: ThreadPoolExecutor | None = None

    @default("options_form")
    def _default_options_form(self):
        return self._options_form

    @default("start_timeout")
    def _default_start_timeout(self):
        return 120

    # --- engine access (blocking calls run in a shared thread pool) ---------
    @property
    def client(self) -> docker.DockerClient:
        key = (self.engine_url, self.engine_timeout)
        if key not in _clients:
            _clients[key] = docker.DockerClient(base_url=self.engine_url, timeout=self.engine_timeout)
        return _clients[key]

    async def _run(self, fn, *args, **kwargs) -> Any:
        if DSWLocalSpawner._executor is None:
            DSWLocalSpawner._executor = ThreadPoolExecutor(self.engine_threads, thread_name_prefix="dsw-engine")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(DSWLocalSpawner._executor, lambda: fn(*args, **kwargs))

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

    # --- progress ----------------------------------------------------------------
    def _event(self, progress: int, message: str) -> None:
        self._events.append({"progress": progress, "message": message})
        self._new_event.set()
        self.log.info("%s: %s", self._log_name, message)

    async def progress(self):
        sent = 0
        while True:
            events = getattr(self, "_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            if getattr(self, "_start_done", True) and sent >= len(events):
                return
            self._new_event.clear()
            try:
                await asyncio.wait_for(self._new_event.wait(), 1)
            except asyncio.TimeoutError:
                pass

    # --- lifecycle -----------------------------------------------------------------
    async def start(self):
        self._events, self._new_event, self._start_done = [], asyncio.Event(), False
        try:
            spec = await self._run(self.resolve_spec)
            self._apply_limits(spec)
            await self._run(self.admit, spec)
            try:
                return await self._start(spec)
            except BaseException:
                await self._run(self.release)
                raise
        finally:
            self._start_done = True
            self._new_event.set()

    def _apply_limits(self, spec: InstanceSpec) -> None:
        """Expose limits the JupyterHub way (CPU_LIMIT/MEM_LIMIT env) and land on the kind's URL."""
        self.cpu_limit = spec.cpu
        self.mem_limit = spec.memory
        self.default_url = spec.start_url

    async def _start(self, spec: InstanceSpec):
        name = container.container_name(self.user.name, self.name)
        self._event(5, f"Preparing {spec.describe()}")
        keys = await self._storage_preflight(spec)  # refuses before anything is made
        # independent engine calls, concurrently (each is a round trip to the engine)
        await asyncio.gather(self._ensure_image(spec.image), self._ensure_volume(spec), self._remove_stale(name))
        # Inside the container the server binds 0.0.0.0:8888; the engine publishes it on host_ip.
        self.ip, self.port = "0.0.0.0", container.SERVER_PORT
        env = self.get_env()
        cmd = [*self.cmd, *self.get_args()]
        try:
            bound = await self._mount_storage(spec, keys)
            kwargs = container.create_kwargs(bound, name=name, cmd=cmd, env=env, host_ip=self.host_ip,
                                             network=self.network or None, attach_gpus=self.attach_gpus)
            self._event(40, f"Starting container {name} from {spec.image}")
            created = await self._run(self.client.api.create_container, **kwargs)
            self.container_id = created["Id"]
            await self._run(self.client.api.start, self.container_id)
            self.host_port = await self._published_port()
            self._event(60, "Waiting for the server to answer")
            await self._wait_ready(spec)
        except BaseException:
            await self._remove_container()
            await self._release_storage()
            raise
        self._event(100, f"Server ready: opening {spec.start_url}")
        return (self.host_ip, self.host_port)

    # --- storage (NAS binds, OSS via s3fs) -----------------------------------------------
    @staticmethod
    def _storage_refusal(exc: StorageError) -> web.HTTPError:
        return web.HTTPError(400, log_message=str(exc).replace("%", "%%"), reason=None)

    async def _storage_preflight(self, spec: InstanceSpec) -> dict[str, Keys]:
        """Keys found and OSS access checked (boto3, in a thread, with timeouts); NAS host
        folders exist. Raises a 400 naming the storage; nothing has been made yet."""
        keys: dict[str, Keys] = {}
        try:
            storage_local.bind_spec(spec, self.storage_layout)  # NFS-only entries cannot run here
            for m in spec.mounts:
                if m.type == "oss":
                    self._event(8, f"Checking access to {m.url} for {m.mount_path}")
                    keys[m.storage] = local_keys(m)
                    await check_oss_async(m, keys[m.storage], timeout=self.storage_timeout)
                elif m.type in ("host", "nfs"):
                    folder = m.host_source if m.type == "nfs" else m.source
                    ok = await self._run(os.path.isdir, folder)
                    if not ok:
                        raise StorageError(f"storage {m.storage!r}: the NAS folder {folder} does not exist on "
                                           "this machine (is the NAS mounted on the host?)")
        except StorageError as exc:
            raise self._storage_refusal(exc) from None
        return keys

    async def _mount_storage(self, spec: InstanceSpec, keys: dict[str, Keys]) -> InstanceSpec:
        """Mount each OSS entry with s3fs on the host; return the spec the engine binds."""
        layout = self.storage_layout
        if spec.mounts:
            await self._release_storage()  # leftovers of a crashed start of this instance
        for m in spec.mounts:
            mode = "read-only" if m.read_only else "read-write"
            if m.type == "oss":
                self._event(30, f"Mounting {m.url} at {m.mount_path} ({mode})")
                try:
                    await self._run(storage_local.mount_oss, layout, self.user.name, self.name or "", m,
                                    keys[m.storage], s3fs=self.s3fs_path, uid=self.storage_uid,
                                    gid=self.storage_gid, timeout=self.storage_timeout)
                except StorageError as exc:
                    raise web.HTTPError(500, log_message=str(exc).replace("%", "%%"), reason=None) from None
            else:
                folder = m.host_source if m.type == "nfs" else m.source
                self._event(30, f"Mounting NAS {folder} at {m.mount_path} ({mode})")
        return storage_local.bind_spec(spec, layout)

    async def _release_storage(self) -> None:
        try:
            removed = await self._run(storage_local.release_instance, self.storage_layout,
                                      self.user.name, self.name or "")
        except StorageError as exc:
            self.log.warning("%s: storage not fully released: %s", self._log_name, exc)
            return
        if removed:
            self.log.info("%s: released storage: %s", self._log_name,
                          ", ".join(p for p in removed if "/storage-credentials/" not in p) or "credentials")

    async def _ensure_image(self, ref: str) -> None:
        try:
            await self._run(self.client.api.inspect_image, ref)
            return
        except ImageNotFound:
            pass
        self._event(10, f"Pulling image {ref}")
        reason = ""
        try:
            # The engine reports pull failures inside the stream, not as an HTTP error.
            for line in await self._run(lambda: list(self.client.api.pull(ref, stream=True, decode=True))):
                if isinstance(line, dict) and line.get("error"):
                    reason = line["error"]
            await self._run(self.client.api.inspect_image, ref)
        except (APIError, DockerException) as exc:
            reason = reason or getattr(exc, "explanation", None) or str(exc)
            raise web.HTTPError(500, "%s", f"image {ref} is not on this machine and could not be pulled "
                                           f"({reason}); build managed images with images/build.sh") from None

    async def _ensure_volume(self, spec: InstanceSpec) -> None:
        if not spec.home:
            return
        try:
            await self._run(self.client.api.inspect_volume, spec.home.source)
        except NotFound:
            self._event(20, f"Creating home volume {spec.home.source}")
            try:
                await self._run(self.client.api.create_volume, spec.home.source, labels=spec.home_labels())
            except APIError:
                # another first spawn of this member created it meanwhile (podman answers 500)
                await self._run(self.client.api.inspect_volume, spec.home.source)

    async def _remove_stale(self, name: str) -> None:
        """A container left by a crash under our name would block the new one."""
        try:
            info = await self._run(self.client.api.inspect_container, name)
        except NotFound:
            return
        if info["Config"]["Labels"].get(container.MANAGED_LABEL) != "true":
            raise web.HTTPError(409, "%s", f"a container named {name} exists and is not managed by DSW Hub")
        await self._run(self.client.api.remove_container, name, force=True)

    async def _published_port(self) -> int:
        info = await self._run(self.client.api.inspect_container, self.container_id)
        bindings = info["NetworkSettings"]["Ports"].get(f"{container.SERVER_PORT}/tcp") or []
        if not bindings:
            raise web.HTTPError(500, "%s", "the engine did not publish the server port")
        return int(bindings[0]["HostPort"])

    async def _wait_ready(self, spec: InstanceSpec) -> None:
        """Probe until the server answers, so the hub never backs off waiting for it."""
        url = f"http://{self.host_ip}:{self.host_port}{self.server.base_url}api"
        http = AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        next_check = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                await http.fetch(url, request_timeout=2, connect_timeout=1)
                return
            except HTTPClientError as exc:
                if exc.code != 599:  # any HTTP answer means the server is up
                    return
            except OSError:
                pass
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1
                status = await self.poll()
                if status is not None:
                    logs = await self._run(self.client.api.logs, self.container_id, tail=15)
                    tail = logs.decode(errors="replace").strip().splitlines()[-5:]
                    raise web.HTTPError(500, "%s", f"the server exited with status {status} while starting: "
                                             + " | ".join(tail))
            await asyncio.sleep(self.ready_interval)
        raise web.HTTPError(500, "%s", f"the server did not answer within {self.start_timeout} s")

    async def poll(self):
        if not self.container_id:
            return 0
        try:
            info = await self._run(self.client.api.inspect_container, self.container_id)
        except NotFound:
            return 0
        except (DockerException, OSError) as exc:
            self.log.warning("cannot reach the engine to poll %s: %s", self._log_name, exc)
            return None
        state = info["State"]
        if state.get("Running"):
            return None
        return state.get("ExitCode") or 1

    async def stop(self, now=False):
        try:
            if self.container_id:
                try:
                    await self._run(self.client.api.stop, self.container_id, timeout=0 if now else self.stop_timeout)
                except NotFound:
                    pass
            await self._remove_container()
            await self._release_storage()
        finally:
            await self._run(self.release)

    async def _remove_container(self) -> None:
        if not self.container_id:
            return
        try:
            await self._run(self.client.api.remove_container, self.container_id, force=True)
        except NotFound:
            pass
        self.container_id = ""
