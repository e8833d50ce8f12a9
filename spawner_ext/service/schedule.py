"""The scheduled-stop timer: instances whose stop time has come are stopped through the hub.

The times live in the state database (``instance_lifecycle.stop_at``), not in this process,
so a schedule survives restarts of the hub and of this service: the first round after a
start stops whatever became due while nobody was running. The service runs beside the hub
on both deployments (a hub-managed process on one machine, in the hub pod on Kubernetes)
and stops through the hub's REST API, so nothing here depends on the engine.

Each due instance: the intent (reason ``schedule``, by whoever set the time) is written
first, then the hub is asked to stop it; the hub's post-stop hook records the last stop
from that intent (``instance_record``). An instance that is not running any more has its
stale schedule cleared; one still starting or stopping is left for the next round.
"""

from __future__ import annotations

import asyncio
import logging
import os

from .. import instance_record
from ..instance_record import StopReason
from . import hub_api
from .actions import lifecycle_sessions

log = logging.getLogger("dsw.schedule")


def period() -> float:
    """DSW_SCHEDULE_SECONDS (hub setting; 0 turns the timer off); absent: the reconcile
    period (DSW_RECONCILE_SECONDS), at most 30 s, so a stop fires at most that late."""
    value = os.environ.get("DSW_SCHEDULE_SECONDS", "").strip()
    if value:
        return float(value)
    reconcile = float(os.environ.get("DSW_RECONCILE_SECONDS", "60") or 60)
    return min(reconcile, 30.0) if reconcile > 0 else 30.0


async def fire_due() -> list[str]:
    """Stop every instance whose scheduled time has come; return what was stopped."""
    db = lifecycle_sessions()
    rows = await asyncio.to_thread(instance_record.due, db)
    stopped = []
    for row in rows:
        name = f"{row.user}/{row.server or 'default'}"
        try:
            model = await hub_api.server_model(row.user, row.server)
            if model and model.get("pending"):
                continue  # starting or stopping: the next round decides
            if not model or not model.get("ready"):
                await asyncio.to_thread(instance_record.set_stop_at, db, row.user, row.server, None, "")
                log.info("%s: scheduled stop dropped, it is not running", name)
                continue
            await asyncio.to_thread(instance_record.mark_intent, db, row.user, row.server, StopReason.schedule,
                                    row.stop_at_by)
            status = await hub_api.stop_server(row.user, row.server)
            log.info("%s: scheduled stop (set by %s for %sZ): hub answered %s", name, row.stop_at_by,
                     row.stop_at.isoformat(), status)
            stopped.append(name)
        except Exception:  # one failing stop does not keep the others running
            log.exception("%s: scheduled stop failed; trying again next round", name)
    return stopped


async def forever(every: float) -> None:
    while True:
        try:
            await fire_due()
        except Exception:
            log.exception("scheduled-stop round failed")
        await asyncio.sleep(every)
