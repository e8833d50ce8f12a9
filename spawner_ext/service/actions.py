"""What a caller can do through the DSW service: the one set of operations the API and the
pages share (permission check, change, audit, hub sync).

Plain functions do database work and are called from worker threads (FastAPI's thread pool
for plain ``def`` routes, ``asyncio.to_thread`` otherwise); ``async`` functions add the hub's
REST calls and run their database steps in threads, so nothing blocks the event loop.
Refusals raise ``ops.OpError`` (status + message); the API answers it as JSON, a page
shows it on the page it redirects to.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import contextmanager

import httpx
from pydantic import ValidationError
from sqlalchemy import select

from .. import instance_record, policy, snapshots
from ..catalog.db import (AuditEvent, InstanceLifecycle, WorkspacePolicy, WorkspaceShare, now, read_sessions,
                          sessions)
from ..catalog.live import allocation
from ..catalog.models import Capacity
from ..catalog_spawner import cached_catalog, default_state_db_url
from ..errors import OptionsError
from ..instance_record import StopReason
from ..quantities import format_memory
from ..quota import usage
from ..roles import ACTION_TEXT, Action, Role
from . import hub_api, ops
from .auth import can, is_platform_admin
from .schemas import CapacityBody

OpError = ops.OpError
log = logging.getLogger("dsw.actions")


class Settings:
    catalog_path = os.environ.get("DSW_CATALOG", "")
    db_url = os.environ.get("DSW_STATE_DB_URL") or default_state_db_url()


def idle_bounds() -> policy.IdleBounds:
    """The platform's idle bounds: the hub settings DSW_IDLE_DEFAULT_MINUTES and
    DSW_IDLE_MAX_MINUTES, passed by the hub in the service's environment (the spawner gets
    the same settings as traits); absent, policy.IdleBounds' defaults, as the spawner's."""
    base = policy.IdleBounds()
    def minutes(name: str, default: float) -> float:
        try:
            return float(os.environ.get(name, "") or default)
        except ValueError:
            return default
    return policy.IdleBounds(default_minutes=minutes("DSW_IDLE_DEFAULT_MINUTES", base.default_minutes),
                             max_minutes=minutes("DSW_IDLE_MAX_MINUTES", base.max_minutes),
                             min_minutes=minutes("DSW_IDLE_MIN_MINUTES", base.min_minutes))


def lifecycle_sessions():
    return sessions(Settings.db_url)


@contextmanager
def context(actor: str, read_only: bool = False):
    """One transaction as ``actor``: committed on success, rolled back on any exception.
    ``read_only``: through catalog/db.read_sessions (no write lock on SQLite)."""
    with (read_sessions if read_only else sessions)(Settings.db_url)() as s, s.begin():
        yield ops.Ctx(cached_catalog(Settings.catalog_path), s, actor)


def reading(actor: str):
    """A read-only view as ``actor``: pages and GET endpoints."""
    return context(actor, read_only=True)


def actor_role(ctx: ops.Ctx, user: dict, ws: str) -> str | None:
    if is_platform_admin(user):
        return "platform"
    w = ctx.catalog.workspace(ws)
    return w.members.get(user["name"]) if w else None


@contextmanager
def attempt(user: dict, action: str, ws: str, target: str):
    """A change in one transaction; a refusal rolls it back, then is audited on its own."""
    try:
        with context(user["name"]) as ctx:
            yield ctx
    except OpError as exc:
        with context(user["name"]) as ctx:
            ctx.audit(action, ws, target, "refused", exc.message)
        raise


def require(user: dict, action: Action, ws: str, what: str) -> None:
    """Refuse (and audit privileged refusals) unless the caller's scopes allow ``action``."""
    if can(user, action, ws):
        return
    with context(user["name"]) as ctx:
        exists = ctx.catalog.workspace(ws) is not None
        if exists and action not in (Action.view, Action.list_instances):
            ctx.audit(action.value, ws, what, "refused", f"{user['name']} lacks {action.value} in {ws}")
    if not exists:
        raise OpError(404, f"unknown workspace {ws!r}")
    raise OpError(403, f"{user['name']} may not {ACTION_TEXT[action]} in workspace {ws}")


def require_platform(user: dict, action: str, target: str = "") -> None:
    if is_platform_admin(user):
        return
    with context(user["name"]) as ctx:
        ctx.audit(action, "", target, "refused", f"{user['name']} is not a platform admin")
    raise OpError(403, "only platform admins may manage allocations")


def capacity(fields: dict) -> Capacity:
    """Form fields (strings) through the same model as API bodies."""
    try:
        return CapacityBody.model_validate(fields)
    except ValidationError as exc:
        raise OpError(400, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                     for e in exc.errors())) from None


def role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise OpError(400, f"role: choose one of {', '.join(r.value for r in Role)}") from None


def cap_text(cap: Capacity) -> str:
    return f"cpu={cap.cpu:g} memory={format_memory(cap.memory)} gpu={cap.gpu}"


# --- reads ---------------------------------------------------------------------------
def workspaces(user: dict) -> list[dict]:
    with reading(user["name"]) as ctx:
        return [{"id": w.id, "display_name": w.display_name, "role": w.members.get(user["name"]),
                 "ws": w} for w in ctx.catalog.workspaces if can(user, Action.view, w.id)]


def overview(user: dict, ws: str) -> dict:
    require(user, Action.view, ws, ws)
    with reading(user["name"]) as ctx:
        return ops.overview(ctx, ws)


def _iso(when) -> str | None:
    return when.isoformat() + "Z" if when else None


def lifecycle_view(row) -> dict:
    """An instance's lifecycle as members see it: its idle limit (minutes, 0 = never stopped
    for idleness; None when it started before lifecycle records), its scheduled stop and who
    set it, and why it last stopped. Never its start-up script or options (they may hold
    secrets, and a visitor sees this list too)."""
    if row is None:
        return {"idle_minutes": None, "scheduled_stop": None, "last_stop": None}
    return {
        "idle_minutes": row.idle_minutes if row.started_at or row.idle_minutes else None,
        "scheduled_stop": {"at": _iso(row.stop_at), "by": row.stop_at_by} if row.stop_at else None,
        "last_stop": {"reason": row.last_stop_reason, "by": row.last_stop_by, "detail": row.last_stop_detail,
                      "at": _iso(row.last_stopped_at)} if row.last_stop_reason else None,
    }


async def instances(user: dict, ws: str) -> list[dict]:
    """Reservations of the workspace, each with the hub's view of its server (state, last
    activity) and its lifecycle (idle limit, scheduled stop, last stop); instances of the
    workspace that are stopped now are listed after them with why they stopped."""
    def rows():
        require(user, Action.list_instances, ws, ws)
        with reading(user["name"]) as ctx:
            running = ops.instances(ctx, ws)
        return running, instance_record.for_workspace(read_sessions(Settings.db_url), ws)
    found, records = await asyncio.to_thread(rows)
    seen = {(r["user"], r["server"]) for r in found}
    for (owner, server), rec in sorted(records.items()):
        if (owner, server) not in seen:
            found.append({"user": owner, "server": server, "kind": "", "resource_group": "", "instance_type": "",
                          "cpu": 0, "memory": 0, "gpu": 0, "since": None})
    states = await hub_api.server_states({r["user"] for r in found})
    for r in found:
        hub = states.get((r["user"], r["server"]), {})
        r["state"] = hub.get("state", "stopped")
        r["last_activity"] = hub.get("last_activity")
        r.update(lifecycle_view(records.get((r["user"], r["server"]))))
    return found


def saved_images(user: dict, ws: str) -> list[dict]:
    require(user, Action.view, ws, ws)
    with reading(user["name"]) as ctx:
        return ops.saved_images(ctx, ws, all_private=can(user, Action.publish_image, ws))


def saves_in_progress(user: dict, ws: str) -> list[dict]:
    """Saves running now in ``ws`` with the agent's progress (state, bytes built, bytes
    uploaded): the caller's own, or all for those who may publish (as saved_images)."""
    require(user, Action.view, ws, ws)
    everyone = can(user, Action.publish_image, ws)
    return [e for e in _saving.in_workspace(ws) if everyone or e["owner"] == user["name"]]


def allocations(user: dict, action: str = "list-allocations") -> list[dict]:
    require_platform(user, action)
    with reading(user["name"]) as ctx:
        cat = ctx.catalog
        out = []
        for g in cat.resource_groups:
            used = usage(ctx.session, g.id)
            rows = []
            for w in cat.workspaces:
                a = allocation(ctx.base, ctx.session, w.id, g.id)
                if a or g.id in w.resource_groups:
                    u = usage(ctx.session, g.id, workspace=w.id)
                    rows.append({"workspace": w.id, "quota": a.model_dump() if a else None,
                                 "used": {"cpu": u.cpu, "memory": u.memory, "gpu": u.gpu}})
            out.append({"id": g.id, "kind": g.kind, "oversell": g.oversell, "capacity": g.capacity.model_dump(),
                        "used": {"cpu": used.cpu, "memory": used.memory, "gpu": used.gpu}, "workspaces": rows})
        return out


def workspace_ids() -> list[str]:
    with reading("") as ctx:
        return [w.id for w in ctx.catalog.workspaces]


def audit_log(user: dict, limit: int) -> list[dict]:
    if not can(user, "audit"):
        raise OpError(403, "only platform admins may read the audit log")
    if not 1 <= limit <= 10000:
        raise OpError(400, "limit must be between 1 and 10000")
    with reading(user["name"]) as ctx:
        rows = ctx.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
        return [{"at": r.at.isoformat() + "Z", "actor": r.actor, "action": r.action, "workspace": r.workspace,
                 "target": r.target, "outcome": r.outcome, "detail": r.detail} for r in rows]


# --- instances -----------------------------------------------------------------------
# Nobody holds a JupyterHub server scope on another member's servers (rbac.role_scopes):
# stopping or restarting someone else's instance happens here, decided by the caller's role
# in the instance's OWN workspace (its reservation), done with the service's token, audited.
def _instance_check(user: dict, ws: str, owner: str, server: str, action: str) -> None:
    """Refuse unless the caller may act on ``owner/server`` and it runs in ``ws``.

    The workspace in the URL is only where the caller says they act: it must be the
    workspace the instance was admitted to (its reservation), else 404, so a role held in
    one workspace never reaches an instance of another."""
    target = f"{owner}/{server}"
    require(user, Action.use_own if owner == user["name"] else Action.manage_any, ws, target)
    with attempt(user, action, ws, target) as ctx:
        if ops.instance_workspace(ctx.session, owner, server) != ws:
            raise OpError(404, f"no running instance {owner}/{server or 'default'} in workspace {ws}")


def _audit(user: dict, action: str, ws: str, target: str, outcome: str, detail: str = "") -> None:
    with context(user["name"]) as ctx:
        ctx.audit(action, ws, target, outcome, detail)


def _mark_ops(user: dict, owner: str, server: str) -> None:
    """Before stopping another member's instance: the stop's reason is ops, by the caller
    (the hub's post-stop hook records it; instance_record says why an intent is needed)."""
    if owner != user["name"]:
        instance_record.mark_intent(lifecycle_sessions(), owner, server, StopReason.ops, user["name"])


async def stop_instance(user: dict, ws: str, owner: str, server: str) -> dict:
    await asyncio.to_thread(_instance_check, user, ws, owner, server, "stop-instance")
    await asyncio.to_thread(_mark_ops, user, owner, server)
    status = await hub_api.stop_server(owner, server)
    await asyncio.to_thread(_audit, user, "stop-instance", ws, f"{owner}/{server}", "ok", f"hub answered {status}")
    return {"stopping": f"{owner}/{server}", "hub_status": status}


async def restart_instance(user: dict, ws: str, owner: str, server: str) -> dict:
    """Stop, then start with the options the owner last started it with (the hub keeps them):
    the caller chooses nothing about another member's instance."""
    await asyncio.to_thread(_instance_check, user, ws, owner, server, "restart-instance")
    model = await hub_api.server_model(owner, server)
    if not model or not model.get("ready"):
        await asyncio.to_thread(_audit, user, "restart-instance", ws, f"{owner}/{server}", "refused", "not running")
        raise OpError(409, f"{owner}/{server or 'default'} is not running; only a running instance restarts")
    options = model.get("user_options") or {}
    await asyncio.to_thread(_mark_ops, user, owner, server)
    try:
        status = await hub_api.restart_server(owner, server, options)
    except (httpx.HTTPError, TimeoutError) as exc:
        detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else str(exc)
        await asyncio.to_thread(_audit, user, "restart-instance", ws, f"{owner}/{server}", "failed", detail)
        raise OpError(502, f"the hub did not restart {owner}/{server or 'default'}: {detail}") from None
    await asyncio.to_thread(_audit, user, "restart-instance", ws, f"{owner}/{server}", "ok",
                            f"with the owner's last options {sorted(options)}")
    return {"restarting": f"{owner}/{server}", "hub_status": status, "user_options": options}


def _options_error(exc: OptionsError) -> OpError:
    return OpError(exc.status, f"{exc.field}: {exc.message}")


# --- lifecycle policy and scheduled stops ---------------------------------------------------
def get_policy(user: dict, ws: str) -> dict:
    """The workspace's idle bound (None: the platform's applies) with the platform's bounds."""
    require(user, Action.view, ws, ws)
    with reading(user["name"]) as ctx:
        w = ops.workspace_or_404(ctx.catalog, ws)
        row = ctx.session.get(WorkspacePolicy, ws)
        bounds = idle_bounds()
        return {"workspace": ws, "idle_max_minutes": w.idle_max_minutes,
                "platform_idle_default_minutes": bounds.default_minutes,
                "platform_idle_max_minutes": bounds.max_minutes,
                "updated_by": row.updated_by if row else "", "updated_at": _iso(row.updated_at) if row else None}


def set_policy(user: dict, ws: str, idle_max_minutes) -> dict:
    """Owners/admins of ``ws`` (Action.set_policy) or a platform admin set the workspace's idle
    bound within the platform's (400 naming idle_max_minutes); None clears it. Audited.
    Instances already running keep the limit they started with; new spawns are bounded."""
    require(user, Action.set_policy, ws, ws)
    with attempt(user, "set-lifecycle-policy", ws, ws) as ctx:
        ops.workspace_or_404(ctx.catalog, ws)
        try:
            minutes = policy.workspace_idle_max(idle_max_minutes, idle_bounds())
        except OptionsError as exc:
            raise _options_error(exc) from None
        ctx.session.merge(WorkspacePolicy(workspace=ws, idle_max_minutes=minutes, updated_by=user["name"],
                                          updated_at=now()))
        ctx.audit("set-lifecycle-policy", ws, ws, "ok",
                  f"idle_max_minutes={minutes:g}" if minutes is not None else "idle_max_minutes cleared")
    return get_policy(user, ws)


def _schedule(user: dict, ws: str, owner: str, server: str, when) -> dict:
    """Set (``when``) or clear (None) the scheduled stop of ``owner/server`` running in ``ws``."""
    me, target = user["name"], f"{owner}/{server}"
    action = "schedule-stop" if when else "clear-scheduled-stop"
    _instance_check(user, ws, owner, server, action)
    db = lifecycle_sessions()
    with db() as s, s.begin():  # an instance started before lifecycle records gets one now
        if s.get(InstanceLifecycle, (owner, server)) is None:
            s.add(InstanceLifecycle(user=owner, server=server, workspace=ws, idle_minutes=0.0, stop_at_by="",
                                    intent="", intent_by="", last_stop_reason="", last_stop_by="",
                                    last_stop_detail=""))
    if not instance_record.set_stop_at(db, owner, server, when, me):
        raise OpError(404, f"no running instance {owner}/{server or 'default'} in workspace {ws}")
    if owner != me:  # the owner's own schedule is theirs; anybody else's is audited
        _audit(user, action, ws, target, "ok", f"stop at {_iso(when)}" if when else "cleared")
    return {"instance": target, "workspace": ws, **lifecycle_view(instance_record.get(db, owner, server))}


def schedule_stop(user: dict, ws: str, owner: str, server: str, stop_at=None, stop_in_hours=None) -> dict:
    """A "stop at <time>" or "stop in N hours": the owner on their own instance (use_own), the
    workspace's ops/admins/owner on any of its instances (manage_any). The service's timer
    stops it when the time comes (``schedule.fire_due``); the time lives in the state database."""
    try:
        when = policy.stop_time(at=stop_at, in_hours=stop_in_hours)
    except OptionsError as exc:
        _instance_check(user, ws, owner, server, "schedule-stop")  # 403/404 before 400
        raise _options_error(exc) from None
    return _schedule(user, ws, owner, server, when)


def clear_scheduled_stop(user: dict, ws: str, owner: str, server: str) -> dict:
    return _schedule(user, ws, owner, server, None)


def subdomains() -> bool:
    """True when JupyterHub serves each user's servers on their own host (subdomain_host):
    the hub passes DSW_SUBDOMAIN_HOST to the service then."""
    return bool(os.environ.get("DSW_SUBDOMAIN_HOST", "").strip())


NO_SHARING = ("sharing is off on this hub: without subdomains (JupyterHub's subdomain_host) every user "
              "server runs on the hub's own origin, so a page in a shared instance could act as whoever "
              "opens it (on the hub and on these pages). An operator enables sharing by serving user "
              "servers on their own hosts")


async def share_instance(user: dict, ws: str, owner: str, server: str) -> dict:
    def change():
        if not subdomains():
            with attempt(user, "share-instance", ws, f"{owner}/{server}"):
                raise OpError(403, NO_SHARING)
        if owner != user["name"]:
            raise OpError(403, "only an instance's creator can share it")
        require(user, Action.use_own, ws, f"{owner}/{server}")
        with attempt(user, "share-instance", ws, f"{owner}/{server}") as ctx:
            ops.share(ctx, ws, owner, server)
            ctx.audit("share-instance", ws, f"{owner}/{server}", "ok")
            return ctx.catalog
    cat = await asyncio.to_thread(change)
    result = await hub_api.sync_shares(cat, [(owner, server)], ws)
    if result.problems or result.gone:
        raise OpError(502, "; ".join(result.problems) or f"{owner}/{server or 'default'} no longer exists")
    return {"shared": f"{owner}/{server}", "workspace": ws}


async def unshare_instance(user: dict, ws: str, owner: str, server: str) -> dict:
    def change():
        if owner != user["name"]:
            raise OpError(403, "only an instance's creator can stop sharing it")
        with context(user["name"]) as ctx:
            ops.unshare(ctx, ws, owner, server)
    await asyncio.to_thread(change)
    await hub_api.revoke_shares(owner, server)
    return {"unshared": f"{owner}/{server}", "workspace": ws}


# --- hub groups and shares follow the effective catalogue ------------------------------
def _share_rows(ws: str) -> list[tuple[str, str]]:
    with reading("reconcile") as ctx:
        return ops.shares(ctx.session, ws)


def _snapshot(ws: str) -> tuple:
    with reading("reconcile") as ctx:
        return ctx.catalog, ops.shares(ctx.session, ws)


def _forget_shares(ws: str, gone: list[tuple[str, str]]) -> None:
    with context("reconcile") as ctx:
        for owner, server in gone:
            if ctx.session.get(WorkspaceShare, (ws, owner, server)) is not None:
                ops.unshare(ctx, ws, owner, server)
                ctx.audit("unshare-instance", ws, f"{owner}/{server}", "ok", "the server was deleted")


async def converge(ws: str) -> list[str]:
    """Make the hub's groups and shares of ``ws`` equal the effective catalogue, removals
    included; return the shares that failed (the others are still synced).

    Race-free with concurrent changes: the hub's state is read first, the catalogue
    snapshotted after, and only what was read is removed. Anything added to the hub after
    that read was committed to the state database after it too, so a stale snapshot never
    undoes it; a removal committed after the snapshot is applied by its own change, and an
    addition is checked against a snapshot taken after the group was read (sync_groups), so
    a stale snapshot never puts back a member a concurrent change took out."""
    rows = await asyncio.to_thread(_share_rows, ws)
    seen_groups = await hub_api.workspace_groups(ws)
    seen_shares = await hub_api.share_holders(rows)
    cat, shared = await asyncio.to_thread(_snapshot, ws)
    await hub_api.sync_groups(cat, ws, seen=seen_groups,
                              current=lambda: asyncio.to_thread(lambda: _snapshot(ws)[0]))
    result = await hub_api.sync_shares(cat, shared, ws, seen=seen_shares, allowed=subdomains())
    if result.gone:
        await asyncio.to_thread(_forget_shares, ws, result.gone)
    for problem in result.problems:
        log.warning("workspace %s: %s", ws, problem)
    return result.problems


# --- members and quotas --------------------------------------------------------------
async def set_member(user: dict, ws: str, member: str, new_role: Role) -> dict:
    def change():
        require(user, Action.manage_members, ws, member)
        with attempt(user, "set-member", ws, member) as ctx:
            ops.set_member(ctx, ws, member, new_role, actor_role=actor_role(ctx, user, ws))
            ctx.audit("set-member", ws, member, "ok", f"role={new_role.value}")
    await asyncio.to_thread(change)
    problems = await converge(ws)
    return {"workspace": ws, "user": member, "role": new_role.value, **({"problems": problems} if problems else {})}


async def remove_member(user: dict, ws: str, member: str) -> dict:
    def change():
        require(user, Action.manage_members, ws, member)
        with attempt(user, "remove-member", ws, member) as ctx:
            ops.remove_member(ctx, ws, member, actor_role=actor_role(ctx, user, ws))
            ctx.audit("remove-member", ws, member, "ok")
    await asyncio.to_thread(change)
    problems = await converge(ws)
    return {"workspace": ws, "removed": member, **({"problems": problems} if problems else {})}


def set_member_quota(user: dict, ws: str, member: str, group: str, cap: Capacity) -> dict:
    require(user, Action.set_member_quota, ws, member)
    with attempt(user, "set-member-quota", ws, f"{member}@{group}") as ctx:
        ops.set_member_quota(ctx, ws, member, group, cap)
        ctx.audit("set-member-quota", ws, f"{member}@{group}", "ok", cap_text(cap))
    return {"workspace": ws, "user": member, "resource_group": group, **Capacity.model_dump(cap)}


def set_allocation(user: dict, group: str, ws: str, cap: Capacity) -> dict:
    require_platform(user, "allocate", f"{group}/{ws}")
    with attempt(user, "allocate", ws, group) as ctx:
        ops.set_allocation(ctx, ws, group, cap)
        ctx.audit("allocate", ws, group, "ok", cap_text(cap))
    return {"workspace": ws, "resource_group": group, **Capacity.model_dump(cap)}


def remove_allocation(user: dict, group: str, ws: str) -> dict:
    require_platform(user, "allocate", f"{group}/{ws}")
    with attempt(user, "remove-allocation", ws, group) as ctx:
        ops.remove_allocation(ctx, ws, group)
        ctx.audit("remove-allocation", ws, group, "ok")
    return {"workspace": ws, "resource_group": group, "removed": True}


# --- saved images (the engine part is spawner_ext/snapshots.py) ---------------------------
def _engine(fn, *args, **kwargs):
    """One blocking engine call sequence on its own client (run it in a thread)."""
    cli = snapshots.client()
    try:
        return fn(cli, *args, **kwargs)
    finally:
        cli.close()


class _Claims:
    """Instances being saved by this service, with the agent's progress: a second save of one
    instance is refused (the agent refuses it too, per container, for saves that reach it from
    elsewhere), and the workspace page lists saves in progress."""

    def __init__(self):
        import threading

        self.lock, self.held = threading.Lock(), {}

    def claim(self, key, entry: dict | None = None) -> bool:
        with self.lock:
            if key in self.held:
                return False
            self.held[key] = dict(entry or {}, state="starting", built=0, uploaded=0)
            return True

    def update(self, key, status: dict) -> None:
        with self.lock:
            if key in self.held:
                self.held[key].update({k: status[k] for k in ("state", "built", "uploaded") if k in status})

    def release(self, key) -> None:
        with self.lock:
            self.held.pop(key, None)

    def in_workspace(self, ws: str) -> list[dict]:
        with self.lock:
            return [dict(v) for v in self.held.values() if v.get("workspace") == ws]


_saving = _Claims()


def save_image(user: dict, ws: str, owner: str | None, server: str, name: str) -> dict:
    """Commit (+ push), then one row; a failure after the commit removes the tag. Blocking:
    call it from a thread."""
    me = user["name"]
    target = f"{owner or me}/{server or 'default'}"
    require(user, Action.save_image, ws, target)
    with attempt(user, "save-image", ws, target) as ctx:
        ops.workspace_or_404(ctx.catalog, ws)
        if owner not in (None, me):
            raise OpError(403, f"{me} may only save their own instances, not {target}")
        if not snapshots.valid_name(name):
            raise OpError(400, f"image name {name!r}: {snapshots.NAME_RULE}")
        cap = ops.workspace_or_404(ctx.catalog, ws).saved_layer_cap
    image_id = snapshots.new_id()
    key = (me, server or "")
    if not _saving.claim(key, {"workspace": ws, "owner": me, "server": server or "default", "name": name}):
        raise OpError(409, f"{target} is already being saved; wait for that save to finish")
    try:
        kube = snapshots.KubeSettings.from_environ()
        progress = lambda status: _saving.update(key, status)  # noqa: E731
        if kube is not None:  # Kubernetes: the agent on the instance's node
            saved = snapshots.save_on_kube(kube, ws=ws, user=me, server=server, name=name, tag=image_id, cap=cap,
                                           progress=progress)
        else:
            saved = _engine(snapshots.save, ws=ws, user=me, server=server, name=name, tag=image_id, cap=cap,
                            progress=progress)
    except snapshots.SaveError as exc:
        with context(me) as ctx:
            ctx.audit("save-image", ws, target, "refused" if exc.status < 500 else "failed", exc.message)
        raise OpError(exc.status, exc.message) from None
    finally:
        _saving.release(key)
    try:
        with context(me) as ctx:
            row = ops.record_saved_image(ctx, ws, image_id, name, saved.ref, saved.base_image, saved.size,
                                         packages=saved.packages, layer_bytes=saved.layer_bytes)
            ctx.audit("save-image", ws, image_id, "ok", f"{target} -> {saved.ref}")
    except BaseException:
        if snapshots.KubeSettings.from_environ() is None:
            _engine(snapshots.remove_tag, saved.ref)
        snapshots.delete_from_registry(saved.ref)
        raise
    return {**row, "pushed": saved.pushed, "uploaded": saved.uploaded}


def publish_image(user: dict, ws: str, image_id: str) -> dict:
    require(user, Action.publish_image, ws, image_id)
    with attempt(user, "publish-image", ws, image_id) as ctx:
        row = ops.publish_image(ctx, ws, image_id)
        ctx.audit("publish-image", ws, image_id, "ok", row["image"])
    return row


def delete_image(user: dict, ws: str, image_id: str) -> dict:
    """Refused (409) while an instance runs from the image; else the local tag, the registry's
    manifest (best effort) and the row go. On Kubernetes (no engine) the instances are the
    workspace's pods and there is no local tag. Blocking: call it from a thread."""
    require(user, Action.publish_image, ws, image_id)
    with attempt(user, "delete-image", ws, image_id) as ctx:
        ref = ops.saved_image_or_404(ctx, ws, image_id).image
    kube = None if os.environ.get("DSW_ENGINE_URL") else snapshots.KubeSettings.from_environ()
    with attempt(user, "delete-image", ws, image_id):
        try:
            using = snapshots.kube_in_use(kube, ws, image_id) if kube else _engine(snapshots.in_use, image_id)
        except snapshots.SaveError as exc:  # the Kubernetes API cannot be asked: delete nothing
            raise OpError(exc.status, exc.message) from None
        if using:
            raise OpError(409, f"instances run from {image_id}: {', '.join(using)}; stop them first")
    try:
        if kube is None:
            _engine(snapshots.remove_tag, ref)
    except Exception as exc:
        with context(user["name"]) as ctx:
            ctx.audit("delete-image", ws, image_id, "failed", str(exc))
        raise OpError(500, f"the engine could not remove {ref}: {getattr(exc, 'explanation', None) or exc}")
    problem = snapshots.delete_from_registry(ref)
    with context(user["name"]) as ctx:
        row = ops.saved_image_or_404(ctx, ws, image_id)
        ctx.session.delete(row)
        ctx.audit("delete-image", ws, image_id, "ok", ref + (f" (registry: {problem})" if problem else ""))
    return {"deleted": image_id, "image": ref, "registry": problem or "ok"}
