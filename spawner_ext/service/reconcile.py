"""The service's timer: state changed outside the service is brought back in line.

- Membership changed elsewhere (SSO logins, catalogue edits) reaches the hub's workspace
  groups and the workspace shares, removals included (``actions.converge``: the hub is read
  before the catalogue is snapshotted, so a pass racing a change never undoes it). Shares
  of deleted servers are forgotten; one failing share does not stop the others.
- Quota reservations follow the servers that actually run: a reservation whose server the
  hub reports neither ready nor pending (the instance died on its own, the hub was killed
  mid-spawn, a release was lost) holds quota nobody uses, and is deleted, logged and audited.
- The reverse: a server the hub reports ready that holds no reservation (lost with a state
  database restored from backup, deleted by hand) is admitted again from the options it was
  started with (the hub keeps them): if it fits its workspace's allocation (and the group's
  capacity and the member's cap) its reservation is re-created; if not, it is stopped with
  the reason ``quota`` (intent first, audited), since it runs on quota nobody granted.
  Options that no longer resolve (the member left the workspace, the type was removed) are
  logged and left to the workspace's admins: quota reconcile stops only for quota.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from .. import instance_record, quota
from .. import options as spawn_options
from ..catalog.db import Reservation
from ..catalog.live import effective_catalog
from ..errors import OptionsError
from ..instance_record import StopReason
from . import hub_api
from .actions import context, converge, idle_bounds, lifecycle_sessions, workspace_ids

log = logging.getLogger("dsw.reconcile")


async def groups_and_shares() -> None:
    """Every workspace, each on its own: one that fails is logged and the others still run."""
    for ws in await asyncio.to_thread(workspace_ids):
        try:
            await converge(ws)
        except Exception:
            log.exception("reconcile of workspace %s failed", ws)


def _reservations() -> dict[int, tuple[str, str]]:
    with context("reconcile") as ctx:
        return {r.id: (r.user, r.server) for r in ctx.session.scalars(select(Reservation))}


def _drop(stale: dict[int, tuple[str, str]]) -> list[str]:
    """Delete by id: a reservation made after the first read (a new spawn of the same
    server) has another id and stays."""
    fixed = []
    with context("reconcile") as ctx:
        for rid, (user, server) in stale.items():
            row = ctx.session.get(Reservation, rid)
            if row is None:  # released meanwhile by the spawner
                continue
            what = (f"{row.cpu:g} cpu, {row.memory} bytes, {row.gpu} gpu of {row.resource_group} "
                    f"(reserved {row.created_at.isoformat()}Z)")
            ctx.session.execute(delete(Reservation).where(Reservation.id == rid))
            ctx.audit("release-reservation", row.workspace, f"{user}/{server}", "ok",
                      f"server neither running nor starting; released {what}")
            fixed.append(f"{user}/{server or 'default'} in {row.workspace}: {what}")
    return fixed


async def reservations() -> list[str]:
    """Reservations first, then the hub's servers: a spawn admitted after the first read is
    not in it, and one admitted before it is already pending at the hub (the hub marks a
    spawn pending before the spawner admits it). Returns what was released."""
    before = await asyncio.to_thread(_reservations)
    if not before:
        return []
    active = await hub_api.active_servers()
    stale = {rid: key for rid, key in before.items() if key not in active}
    if not stale:
        return []
    fixed = await asyncio.to_thread(_drop, stale)
    for line in fixed:
        log.warning("released the quota reservation of %s", line)
    return fixed


#: options of a start that are about its lifecycle, not its resources; a scheduled time in the
#: past or an idle choice above a bound lowered since must not keep it from being re-admitted
_NOT_QUOTA = ("stop_at", "stop_in_hours", "idle_minutes", "startup_script")


def _readmit(user: str, server: str, options: dict) -> tuple[str, str, str]:
    """Admit a running server again: ("ok" | "over" | "unresolved", workspace, detail)."""
    with context("reconcile") as ctx:
        cat = effective_catalog(ctx.base, ctx.session, viewer=user)
    opts = {k: v for k, v in (options or {}).items() if k not in _NOT_QUOTA}
    try:
        spec = spawn_options.resolve(cat, user, server, opts, idle=idle_bounds())
    except OptionsError as exc:
        return "unresolved", "", f"{exc.field}: {exc.message}"
    try:
        quota.admit(lifecycle_sessions(), cat, spec)
    except quota.QuotaExceeded as exc:
        with context("reconcile") as ctx:
            ctx.audit("stop-quota", spec.workspace, f"{user}/{server}", "ok",
                      f"running without a reservation and over quota: {exc}")
        instance_record.mark_intent(lifecycle_sessions(), user, server, StopReason.quota, "reconcile")
        return "over", spec.workspace, str(exc)
    with context("reconcile") as ctx:
        ctx.audit("readmit-reservation", spec.workspace, f"{user}/{server}", "ok",
                  f"running without a reservation; reserved {spec.cpu:g} cpu, {spec.memory} bytes, {spec.gpu} gpu "
                  f"of {spec.resource_group}")
    return "ok", spec.workspace, ""


async def unreserved() -> list[str]:
    """Ready servers first, then reservations: a server ready at the first read was admitted
    before it, so only a lost reservation is missing at the second. Each candidate is read
    again just before it is admitted (one that stopped meanwhile is left alone; a reservation
    made for one that stops right after is released by ``reservations`` next round)."""
    ready = await hub_api.ready_servers()
    if not ready:
        return []
    held = set((await asyncio.to_thread(_reservations)).values())
    done = []
    for (user, server), model in ready.items():
        if (user, server) in held:
            continue
        now = await hub_api.server_model(user, server)
        if not now or not now.get("ready") or now.get("pending"):
            continue
        outcome, ws, detail = await asyncio.to_thread(_readmit, user, server, now.get("user_options") or {})
        name = f"{user}/{server or 'default'}"
        if outcome == "over":
            status = await hub_api.stop_server(user, server)
            log.warning("stopped %s in %s: running without a reservation and over quota (%s); hub answered %s",
                        name, ws, detail, status)
        elif outcome == "ok":
            log.warning("re-created the quota reservation of %s in %s (it ran without one)", name, ws)
        else:
            log.warning("%s runs without a reservation and its options no longer resolve (%s); left running",
                        name, detail)
        done.append(f"{name}: {outcome}")
    return done


async def once() -> None:
    await reservations()
    await unreserved()
    await groups_and_shares()


async def forever(every: float) -> None:
    while True:
        for step in (reservations, unreserved, groups_and_shares):
            try:
                await step()
            except Exception:  # keep reconciling; the next round may succeed
                log.exception("reconcile step %s failed", step.__name__)
        await asyncio.sleep(every)
