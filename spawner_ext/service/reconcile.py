"""The service's timer: state changed outside the service is brought back in line.

- Membership changed elsewhere (SSO logins, catalogue edits) reaches the hub's workspace
  groups and the workspace shares, removals included (``actions.converge``: the hub is read
  before the catalogue is snapshotted, so a pass racing a change never undoes it). Shares
  of deleted servers are forgotten; one failing share does not stop the others.
- Quota reservations follow the servers that actually run: a reservation whose server the
  hub reports neither ready nor pending (the instance died on its own, the hub was killed
  mid-spawn, a release was lost) holds quota nobody uses, and is deleted, logged and audited.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from ..catalog.db import Reservation
from . import hub_api
from .actions import context, converge, workspace_ids

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


async def once() -> None:
    await reservations()
    await groups_and_shares()


async def forever(every: float) -> None:
    while True:
        for step in (reservations, groups_and_shares):
            try:
                await step()
            except Exception:  # keep reconciling; the next round may succeed
                log.exception("reconcile step %s failed", step.__name__)
        await asyncio.sleep(every)
