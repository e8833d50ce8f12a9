"""The one spawn lifecycle both backends share.

``LifecycleMixin`` owns the sequence; a backend supplies only engine steps::

    options -> spec      JupyterHub's ``apply_user_options`` hook (before ``start``)
    admission            quota.admit (403 refusal)
    storage preflight    OSS keys (backend: ``engine_oss_keys``) + one access check (400 refusal)
    prepare              backend: image / home volume / namespace ...       (``engine_prepare``)
    mounts               one progress line per mount                        (``engine_mount``)
    create               backend: container / pod, returns its URL           (``engine_create``)
    wait until ready     backend: ``engine_wait_ready`` (``probe_until_up`` helper here)
    release              backend ``engine_delete`` + ``engine_release_storage`` + quota

Why release sits in ``run_post_stop_hook``: JupyterHub (5.x ``User.stop``) calls
``spawner.stop()`` only when ``poll()`` says the server still runs. A server that died
on its own -- noticed by the poll timer or by the check at hub start -- never gets a
``stop()``; but every end goes through ``User.stop`` and so through the post-stop hook,
while the spawner state (container id, pod name) is still loaded. Every release step is
idempotent and reports only what it actually removed, so stop + post-stop hook, or a
failed start + post-stop hook, release each thing once and log it once.

Why refused spawns remove their server record: the API and the spawn page create the
``orm.Spawner`` row (``user.get_spawner``) before any spawner hook runs, and that row
counts toward ``named_server_limit_per_user``. When a spawn of a named server that never
started successfully is refused (400/403 from this lifecycle), the row is deleted as soon
as the spawn has failed. The failed in-memory spawner stays in ``user.spawners`` (on a
detached stand-in row, never added to the database) only until the refusal has been
delivered, so every place that shows it still can: the answer of the request that asked
(the API's error; the spawn form, which reads ``Refusal.jupyterhub_message``), the
spawn-pending page (reads it too) or its progress stream (reads our events to the end);
at the latest after ``refusal_memory`` seconds. Records that ever ran (``dsw_started`` in
the state), the default server and records with shares are never removed this way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyterhub import orm
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Float, default

from . import instance_record, quota, startup
from .catalog.db import Reservation
from .catalog_spawner import CatalogSpawnerMixin
from .quantities import format_memory
from .spec import InstanceSpec, Mount
from .storage.credentials import Keys, StorageError, check_oss_async

STARTED_KEY = "dsw_started"  # in the spawner state: this server record has run at least once


class Refusal(web.HTTPError):
    """A spawn refused before anything was made (400/403), its message naming the field.

    JupyterHub's pages and progress stream read ``jupyterhub_message`` to show a failed spawn;
    reading it is how the lifecycle learns the refusal has been delivered (``on_read``)."""

    def __init__(self, status: int, message: str):
        super().__init__(status, log_message=message, reason=None)  # tornado escapes % itself
        self.message = message
        self.on_read: list = []

    @property
    def jupyterhub_message(self) -> str:
        for callback in self.on_read:
            callback()
        return self.message


def refusal(status: int, message: str) -> Refusal:
    return Refusal(status, message)


def is_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, Refusal)


class Progress:
    """The progress events of one spawn: one list, read by any number of progress streams."""

    def __init__(self, spawn: Any = None):
        self.spawn = spawn  # the hub's spawn future this belongs to (None outside a hub)
        self.events: list[dict] = []
        self.done = False
        self.refused = False
        self._changed = asyncio.Event()

    def add(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()

    def finish(self) -> None:
        self.done = True
        self._changed.set()

    async def follow(self):
        sent = 0
        while True:
            self._changed.clear()  # before reading: an event added while we yield wakes the wait
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.done:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), 1)
            except asyncio.TimeoutError:
                pass


class LifecycleMixin(CatalogSpawnerMixin):
    """Mix in before the engine's Spawner class; implement the ``engine_*`` steps."""

    storage_timeout = Float(15, config=True, help="Seconds for each OSS access check (and each s3fs mount).")
    startup_poll_interval = Float(0.5, config=True, help="Seconds between reads of a start-up script's output.")
    ready_interval = Float(0.02, config=True, help="Seconds between readiness probes while a server starts.")
    max_probe_rate = Float(50, config=True, help="Readiness probes per second shared by all servers starting at once.")
    max_exit_check_rate = Float(
        10, config=True, help="Checks per second, shared by all servers starting at once, that a server did not exit.")
    _probing = 0  # servers being probed right now, in this hub
    refusal_memory = Float(
        120, config=True,
        help="Seconds a refused spawn's message stays readable for a spawn-pending page that has not "
             "read it yet (its server record is already gone).",
    )

    @default("apply_user_options")
    def _dsw_apply_user_options(self):
        return LifecycleMixin._apply_options_hook

    @default("options_form")
    def _dsw_options_form(self):
        return self._options_form

    # --- what a backend supplies -----------------------------------------------------
    def engine_apply_spec(self, spec: InstanceSpec) -> None:
        """Set engine traits from the spec (no I/O). Raise ValueError for what cannot run here."""

    def engine_placement(self, spec: InstanceSpec) -> str:
        """Where the instance goes, appended to the 'Preparing ...' line (e.g. ' in namespace x')."""
        return ""

    def engine_check_mounts(self, spec: InstanceSpec) -> None:
        """Refuse (StorageError) mounts this engine cannot provide. Pure or cheap."""

    async def engine_check_nas(self, mount: Mount) -> None:
        """Raise StorageError when a NAS mount cannot work here (checked before anything is made)."""

    async def engine_oss_keys(self, mount: Mount, spec: InstanceSpec) -> Keys:
        raise NotImplementedError

    def engine_mount_how(self, mount: Mount) -> str:
        """How the engine provides a mount, for its progress line."""
        return ""

    async def engine_prepare(self, spec: InstanceSpec) -> None:
        """Shared objects the instance needs (image, home volume, namespace ...)."""

    async def engine_mount(self, spec: InstanceSpec, mount: Mount, keys: Keys | None) -> None:
        """Make one storage mount available to the instance about to be created."""

    async def engine_create(self, spec: InstanceSpec):
        """Create and start the instance; return its URL or (ip, port)."""
        raise NotImplementedError

    async def engine_wait_ready(self, spec: InstanceSpec, url) -> None:
        """Return when the server answers (or the engine says it runs)."""

    async def engine_poll(self) -> int | None:
        raise NotImplementedError

    async def engine_output(self) -> str:
        """What the instance printed so far (stdout and stderr), for the start-up script's lines."""
        raise NotImplementedError

    async def engine_delete(self, now: bool) -> list[str]:
        """Stop (gracefully unless ``now``) and remove the container/pod. Idempotent; names what it removed."""
        return []

    async def engine_release_storage(self) -> list[str]:
        """Unmount this instance's storage and remove its credential files. Idempotent."""
        return []

    # --- state -------------------------------------------------------------------------
    _ever_started = False
    _start_failed = False  # this spawner's last start failed: its end is not a stop to record
    _exit_status: int | None = None  # what poll() last saw when the server was gone
    _spec: InstanceSpec | None = None
    _dsw_progress: Progress | None = None
    _spawn_handler = None

    def load_state(self, state):
        super().load_state(state)
        if STARTED_KEY in state:
            self._ever_started = bool(state[STARTED_KEY])
        else:
            # a record from before this marker existed: treat it as used if anything says so
            orm_spawner = getattr(self, "orm_spawner", None)
            used = getattr(orm_spawner, "last_activity", None) if isinstance(orm_spawner, orm.Spawner) else None
            self._ever_started = bool(state) or used is not None

    def get_state(self):
        state = super().get_state()
        if self._ever_started:
            state[STARTED_KEY] = True  # survives clear_state: the record keeps its history
        return state

    # --- progress: one mechanism for both backends -------------------------------------------
    def _progress(self, new: bool = False) -> Progress:
        """The events of the current spawn. Inside the hub a spawn is known by its spawn
        future, so a progress stream opened before the first event reads the right list."""
        p = self._dsw_progress
        spawn = self._spawn_future
        if p is None or p.spawn is not spawn or (new and spawn is None):
            p = self._dsw_progress = Progress(spawn)
        return p

    def emit(self, progress: int, message: str) -> None:
        self._progress().add({"progress": progress, "message": message})
        self.log.info("%s: %s", self._log_name, message)

    async def progress(self):
        p = self._progress()
        try:
            async for event in p.follow():
                yield event
        finally:
            if p.done and p.refused:  # this stream has delivered the refusal: nothing else needs it
                self._refusal_delivered()

    # --- the sequence ---------------------------------------------------------------------------
    @staticmethod
    async def _apply_options_hook(spawner, user_options):
        """JupyterHub's apply_user_options: options -> spec before start; a refusal is a 400/403."""
        spawner._progress(new=True)
        spawner._spawn_handler = spawner.handler
        spawner._refused_early = False
        try:
            spawner._spec = await spawner._options_to_spec()
        except BaseException as exc:
            spawner._refused_early = is_refusal(exc)
            spawner._failed_with(exc)
            raise

    async def _options_to_spec(self) -> InstanceSpec:
        spec = await asyncio.to_thread(self.resolve_spec)  # reads the state database: off the loop
        try:
            self.engine_apply_spec(spec)
        except ValueError as exc:
            raise refusal(400, f"cannot place this instance here: {exc}") from None
        # limits the JupyterHub way (CPU_LIMIT/MEM_LIMIT in the server's env) and the kind's start URL
        self.cpu_limit, self.mem_limit, self.default_url = spec.cpu, spec.memory, spec.start_url
        self.emit(5, f"Preparing {spec.describe()}{self.engine_placement(spec)}")
        return spec

    def resolve_spec(self) -> InstanceSpec:
        try:
            return super().resolve_spec()
        except web.HTTPError as exc:
            raise refusal(exc.status_code, _text(exc)) from None

    async def start(self):
        self._progress(new=self._spec is None)
        self._spawn_handler = self._spawn_handler or self.handler  # (if a deployment replaced the hook)
        self._refused_early = admitted = False
        try:
            spec = self._spec or await self._options_to_spec()
            await asyncio.to_thread(self._admit, spec)  # 403 refusal; nothing made yet
            admitted = True
            self._start_failed, self._exit_status = False, None
            # this run's idle limit and scheduled stop (the culler and the service read them)
            await asyncio.to_thread(instance_record.record_start, self.sessions, spec)
            keys = await self._storage_preflight(spec)  # 400 refusal; nothing made yet
            await self.engine_prepare(spec)
            for m in spec.mounts:
                mode = "read-only" if m.read_only else "read-write"
                how = self.engine_mount_how(m)
                self.emit(30, f"Mounting {m.url} at {m.mount_path} ({mode}{'; ' + how if how else ''})")
                await self.engine_mount(spec, m, keys.get(m.storage))
            url = await self.engine_create(spec)
            await self._follow_startup(spec)
            await self.engine_wait_ready(spec, url)
            self.emit(100, f"Server ready: opening {spec.start_url}")
            self._ever_started = True
            self._spawn_handler = None
            self._exit_status = None  # only a poll after it was ready can say it died
            return url
        except BaseException as exc:
            if admitted:
                self._start_failed = True
                try:  # what was made goes; the member is told why the start failed, not why cleaning up did
                    await asyncio.shield(self.release_instance("start failed", now=True))
                except Exception:
                    self.log.exception("%s: release after a failed start did not finish", self._log_name)
            self._refused_early = not admitted and is_refusal(exc)
            self._failed_with(exc)
            raise
        finally:
            self._spec = None
            self._progress().finish()

    def _admit(self, spec: InstanceSpec) -> None:
        try:
            self.admit(spec)
        except web.HTTPError as exc:
            raise refusal(exc.status_code, _text(exc)) from None

    async def _storage_preflight(self, spec: InstanceSpec) -> dict[str, Keys]:
        """Every mount is checked before anything is created: NAS where the engine needs it,
        OSS keys fetched (engine) and access checked with boto3 (one check, one message)."""
        keys: dict[str, Keys] = {}
        try:
            self.engine_check_mounts(spec)
            for m in spec.mounts:
                if m.type == "oss":
                    self.emit(8, f"Checking access to {m.url} for {m.mount_path}")
                    keys[m.storage] = await self.engine_oss_keys(m, spec)
                    await check_oss_async(m, keys[m.storage], timeout=self.storage_timeout)
                else:
                    await self.engine_check_nas(m)
        except StorageError as exc:
            raise refusal(400, str(exc)) from None
        return keys

    async def _follow_startup(self, spec: InstanceSpec) -> None:
        """Copy the start-up script's lines into the progress until it ends; a failed script
        fails the start with its status and last lines (spawner_ext/startup.py). Polled from the
        engine's log, the same way on both backends: the lines are few and the script short."""
        if not spec.startup_script:
            return
        self.emit(50, f"Running the start-up script (its output goes to {startup.LOG})")
        deadline = time.monotonic() + self.start_timeout
        shown = 0
        while True:
            out = startup.read(await self.engine_output())
            for line in out.lines[shown:startup.MAX_PROGRESS_LINES]:
                self.emit(55, f"start-up script: {line}")
            shown = max(shown, min(len(out.lines), startup.MAX_PROGRESS_LINES))
            if out.status == 0:
                self.emit(58, "The start-up script finished")
                return
            if out.status is not None:
                raise web.HTTPError(500, log_message=out.failure())
            status = await self.poll()
            if status is not None:
                raise web.HTTPError(500, log_message=f"the instance exited with status {status} while its "
                                                     f"start-up script ran (see {startup.LOG})")
            if time.monotonic() > deadline:
                raise web.HTTPError(500, log_message=f"the start-up script still ran after {self.start_timeout} s "
                                                     f"(see {startup.LOG})")
            await asyncio.sleep(self.startup_poll_interval)

    async def probe_until_up(self, url: str, exit_detail=None) -> None:
        """Probe ``url`` until any HTTP answer, so the hub's own wait never backs off; fail
        early (with ``exit_detail()``) when ``poll`` says the server exited.

        Why paced: one server alone is probed every ``ready_interval`` (20 ms), but probes and
        exit checks are shared out across every server starting at once (``max_probe_rate``,
        ``max_exit_check_rate`` per second in all). Unpaced, 50 starts on 2 cores meant 2,500
        probes a second: the hub took 86 CPU s and starved the very servers it waited for, and
        42 of 50 missed the start timeout (benchmarks/concurrent_spawns.py, docs/benchmarks.md)."""
        http = AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        next_check = time.monotonic() + 1
        LifecycleMixin._probing += 1
        try:
            await self._probe_loop(http, url, deadline, next_check, exit_detail)
        finally:
            LifecycleMixin._probing -= 1

    async def _probe_loop(self, http, url: str, deadline: float, next_check: float, exit_detail) -> None:
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
                next_check = time.monotonic() + max(1.0, LifecycleMixin._probing / self.max_exit_check_rate)
                status = await self.poll()
                if status is not None:
                    detail = await exit_detail() if exit_detail else ""
                    raise web.HTTPError(500, log_message=f"the server exited with status {status} while starting"
                                               + (f": {detail}" if detail else ""))
            await asyncio.sleep(max(self.ready_interval, LifecycleMixin._probing / self.max_probe_rate))
        raise web.HTTPError(500, log_message=f"the server did not answer within {self.start_timeout} s")

    # --- every end ------------------------------------------------------------------------
    async def poll(self):
        status = await self.engine_poll()
        if status is not None:
            self._exit_status = status  # why it stopped: died on its own, unless someone asked
        return status

    async def stop(self, now=False):
        await self.release_instance("stopped", now=now)

    async def run_post_stop_hook(self):
        """Every end passes here (see the module docstring): release what is still held."""
        try:
            if not self._refused_early:  # a spawn refused before admission made nothing
                await self.release_instance("server ended")
        except Exception:
            self.log.exception("%s: release after the server ended failed", self._log_name)
        if not self._refused_early and not self._start_failed:
            try:  # why it stopped: an intent (culler, schedule, ops, quota), a death, else its owner
                last = await asyncio.to_thread(instance_record.record_stop, self.sessions, self.user.name,
                                               self.name or "", self._exit_status)
                self.log.info("%s: stopped (%s%s)", self._log_name, last.reason.value,
                              f" by {last.by}" if last.by and last.by != self.user.name else "")
            except Exception:
                self.log.exception("%s: recording why it stopped failed", self._log_name)
        self._exit_status = None
        return await _maybe_await(super().run_post_stop_hook())

    async def delete_forever(self):
        """Removal (DELETE ...?remove=true): nothing of the instance may outlive its record."""
        await self.release_instance("removed", now=True)
        return await _maybe_await(super().delete_forever())

    async def release_instance(self, why: str, now: bool = False) -> list[str]:
        """Release the container/pod, storage mounts and credential files, and the quota
        reservation. Each step runs even if another fails; logs what was released."""
        released: list[str] = []
        problems: list[BaseException] = []
        for step in (lambda: self.engine_delete(now), self.engine_release_storage,
                     lambda: asyncio.to_thread(self._release_quota)):
            try:
                released += await step()
            except Exception as exc:  # noqa: PERF203 - each step is independent
                self.log.warning("%s: %s: not fully released: %s", self._log_name, why, exc)
                problems.append(exc)
        if released:
            self.log.info("%s: %s: released %s", self._log_name, why, "; ".join(released))
        if problems:
            raise problems[0]
        return released

    def _release_quota(self) -> list[str]:
        user, server = self.user.name, self.name or ""
        with self.sessions() as s:
            rows = s.execute(select(Reservation).where(Reservation.user == user, Reservation.server == server)
                             ).scalars().all()
            held = [f"quota reservation ({r.resource_group}: {r.cpu:g} CPU, {format_memory(r.memory)}"
                    f"{f', {r.gpu} GPU' if r.gpu else ''})" for r in rows]
        if held:
            quota.release(self.sessions, user, server)
        return held

    # --- a refusal leaves no server record ------------------------------------------------------
    _forgotten = False
    _refusal_read = False
    _refused_early = False  # refused before admission: nothing was reserved or made

    def _failed_with(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, Refusal):
            message = exc.message
            exc.on_read.append(self._refusal_delivered)
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = _text(exc)
            # what JupyterHub's pages show of a failed spawn (spawn-pending shows nothing else)
            exc.jupyterhub_message = getattr(exc, "jupyterhub_message", None) or message
        p = self._progress()
        p.refused = is_refusal(exc)
        p.add({"progress": 100, "failed": True, "message": message})
        p.finish()
        future = self._spawn_future
        if is_refusal(exc) and future is not None and not self._ever_started and self.name:
            future.add_done_callback(lambda f: self._forget_refused_record(f))

    def _forget_refused_record(self, future) -> None:
        """The spawn has failed with a refusal: delete the server record it created."""
        if future.cancelled() or not is_refusal(future.exception()):
            return
        record = self.orm_spawner
        user = self.user
        if (not isinstance(record, orm.Spawner) or self.active or record.server is not None
                or record.shares or record.share_codes or user.spawners.get(self.name) is not self
                or (record.state or {}).get(STARTED_KEY)):
            return
        db = sa_inspect(record).session
        if db is None:
            return
        name = record.name
        try:
            # a detached stand-in keeps this failed spawner readable (name, message) for the
            # pages that show the refusal; it is never added to the database
            self.orm_spawner = orm.Spawner(name=name, user_options=record.user_options)
            db.delete(record)
            db.commit()
        except Exception:
            db.rollback()
            self.orm_spawner = record
            self.log.exception("%s: could not remove the record of a refused spawn", self._log_name)
            return
        self._forgotten = True
        self.log.info("%s: refused spawn: server record removed (it never ran)", self._log_name)
        handler, self._spawn_handler = self._spawn_handler, None
        if handler is not None and not handler._finished:
            on_finish = handler.on_finish

            def delivered():
                on_finish()
                if handler.get_status() >= 400:  # the request's own answer carried the refusal
                    self._drop_failed_spawner()

            handler.on_finish = delivered
        if self._refusal_read:
            self._drop_failed_spawner()
        else:
            asyncio.get_running_loop().call_later(self.refusal_memory, self._drop_failed_spawner)

    def _refusal_delivered(self) -> None:
        self._refusal_read = True
        self._drop_failed_spawner()

    def _drop_failed_spawner(self) -> None:
        spawners = self.user.spawners
        if self._forgotten and spawners.get(self.name) is self and not self.active:
            spawners.pop(self.name, None)


def _text(exc: web.HTTPError) -> str:
    """An HTTP error's message as the member reads it."""
    return exc.get_message() or ""


async def _maybe_await(value):
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
