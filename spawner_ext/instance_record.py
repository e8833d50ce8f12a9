"""Each instance's lifecycle record in the state database: its idle limit, its scheduled stop,
and why it stopped.

Why a stop needs an *intent*: the hub stops a server through one API call whoever asks,
and the spawner's post-stop hook -- the one place every end passes through -- cannot see
who asked. So whoever stops an instance for a reason other than its owner's wish (the idle
culler's arbiter, the DSW service's schedule timer, an ops/admin stop, a quota reconcile)
writes the intent first; the hub's post-stop hook then records the last stop from it. An
intent older than ``INTENT_TTL`` is ignored (its stop request failed), a poll that found
the server dead means it died on its own, and anything else was its owner.

All functions block on the database: call them off the event loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from .catalog.db import AuditEvent, InstanceLifecycle, now
from .spec import InstanceSpec

INTENT_TTL = dt.timedelta(minutes=5)


class StopReason(StrEnum):
    user = "user"          # its owner (hub page, hub API, DSW page)
    idle = "idle"          # the idle culler, past the instance's idle limit
    schedule = "schedule"  # its scheduled stop time came
    ops = "ops"            # a workspace ops/admin/owner or platform admin, named in ``by``
    died = "died"          # it exited on its own; ``detail`` holds the exit status
    quota = "quota"        # the quota reconcile stopped it


@dataclass(frozen=True)
class LastStop:
    reason: StopReason
    by: str
    detail: str
    at: dt.datetime


def _retried(write):
    """Run a write again when PostgreSQL (SERIALIZABLE, as the state database runs there)
    refuses it for a concurrent transaction: 20 members spawning at once each write their own
    row, yet their inserts can still conflict on the table's index. Rows are per instance, so
    a retry is always right; SQLite never raises this (its writes are serialised)."""
    @functools.wraps(write)
    def run(*args, **kwargs):
        for attempt in range(10):
            try:
                return write(*args, **kwargs)
            except DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) not in ("40001", "40P01") or attempt == 9:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    return run


def _row(session, user: str, server: str) -> InstanceLifecycle | None:
    return session.get(InstanceLifecycle, (user, server))


@_retried
def record_start(sessions: sessionmaker, spec: InstanceSpec) -> None:
    """At admission: the idle limit and scheduled stop this run has. The last stop stays
    (the page shows why it stopped before); a stale intent is cleared."""
    with sessions() as s, s.begin():
        row = _row(s, spec.user, spec.server)
        if row is None:
            row = InstanceLifecycle(user=spec.user, server=spec.server, stop_at_by="", intent="", intent_by="",
                                    last_stop_reason="", last_stop_by="", last_stop_detail="")
            s.add(row)
        row.workspace = spec.workspace
        row.idle_minutes = spec.idle_minutes
        row.started_at = now()
        row.stop_at = spec.stop_at
        row.stop_at_by = spec.user if spec.stop_at else ""
        row.intent, row.intent_by, row.intent_at = "", "", None


@_retried
def set_stop_at(sessions: sessionmaker, user: str, server: str, when: dt.datetime | None, by: str) -> bool:
    """Set (or with None clear) the scheduled stop; False when the instance has no record."""
    with sessions() as s, s.begin():
        row = _row(s, user, server)
        if row is None:
            return False
        row.stop_at, row.stop_at_by = when, (by if when else "")
        return True


@_retried
def mark_intent(sessions: sessionmaker, user: str, server: str, reason: StopReason, by: str) -> None:
    """Say why a stop is about to be asked for (before asking the hub)."""
    with sessions() as s, s.begin():
        row = _row(s, user, server)
        if row is None:
            row = InstanceLifecycle(user=user, server=server, workspace="", idle_minutes=0.0, stop_at_by="",
                                    last_stop_reason="", last_stop_by="", last_stop_detail="")
            s.add(row)
        row.intent, row.intent_by, row.intent_at = reason.value, by, now()


@_retried
def record_stop(sessions: sessionmaker, user: str, server: str, exit_status: int | None = None) -> LastStop:
    """The hub's post-stop hook: why it stopped, from a fresh intent, else a death the poll
    saw (``exit_status``), else its owner. Clears the schedule and the intent, and audits
    every stop its owner did not make (ops stops are audited by the service that made them)."""
    at = now()
    with sessions() as s, s.begin():
        row = _row(s, user, server)
        if row is None:
            row = InstanceLifecycle(user=user, server=server, workspace="", idle_minutes=0.0, stop_at_by="",
                                    intent="", intent_by="")
            s.add(row)
        fresh = row.intent and row.intent_at is not None and at - row.intent_at <= INTENT_TTL
        if fresh:
            reason, by, detail = StopReason(row.intent), row.intent_by, ""
        elif exit_status is not None:
            reason, by, detail = StopReason.died, "", f"exit status {exit_status}"
        else:
            reason, by, detail = StopReason.user, user, ""
        row.last_stop_reason, row.last_stop_by, row.last_stop_detail, row.last_stopped_at = \
            reason.value, by, detail, at
        row.stop_at, row.stop_at_by = None, ""
        row.intent, row.intent_by, row.intent_at = "", "", None
        if reason in (StopReason.idle, StopReason.schedule, StopReason.died, StopReason.quota):
            s.add(AuditEvent(actor=by or "hub", action=f"stop-{reason.value}", workspace=row.workspace,
                             target=f"{user}/{server}" if server else user, outcome="ok",
                             detail=detail or f"stopped: {reason.value}"))
    return LastStop(reason, by, detail, at)


def get(sessions: sessionmaker, user: str, server: str) -> InstanceLifecycle | None:
    with sessions() as s:
        return _row(s, user, server)


def for_workspace(sessions: sessionmaker, workspace: str) -> dict[tuple[str, str], InstanceLifecycle]:
    with sessions() as s:
        rows = s.scalars(select(InstanceLifecycle).where(InstanceLifecycle.workspace == workspace))
        return {(r.user, r.server): r for r in rows}


def due(sessions: sessionmaker, at: dt.datetime | None = None) -> list[InstanceLifecycle]:
    """Instances whose scheduled stop has come (the service's schedule timer stops them)."""
    with sessions() as s:
        query = select(InstanceLifecycle).where(InstanceLifecycle.stop_at.is_not(None),
                                                InstanceLifecycle.stop_at <= (at or now()))
        return list(s.scalars(query))
