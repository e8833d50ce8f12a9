"""Admission: check and reserve quota in one atomic step; release on stop or failure.

Limits, all checked: the resource group's capacity (all workspaces together), the
workspace's allocation in that group, and the member's cap inside the workspace.

Atomic means no two admissions into one resource group read usage at the same time:
SQLite transactions begin IMMEDIATE (the database's write lock, see catalog/db.py);
PostgreSQL takes a transaction-scoped advisory lock per group and reads at READ COMMITTED,
so the second admission waits, then sees the first one's reservation and is refused
cleanly. (At SERIALIZABLE without the lock the loser of a race got a serialization
failure, i.e. a 500, instead of a refusal.)
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from .catalog.db import Reservation, advisory_key
from .catalog.live import allocation, member_quota
from .catalog.models import Catalog
from .resources import Resources
from .spec import InstanceSpec

#: What ``usage`` returns; kept as a name for callers that annotate with it.
Usage = Resources


class QuotaExceeded(Exception):
    """Refused admission; the message says what is in use and what was asked."""


def usage(session: Session, group: str, workspace: str | None = None, user: str | None = None) -> Resources:
    """Reserved in ``group``, optionally only by one workspace or one of its members."""
    q = select(func.coalesce(func.sum(Reservation.cpu), 0.0), func.coalesce(func.sum(Reservation.memory), 0),
               func.coalesce(func.sum(Reservation.gpu), 0)).where(Reservation.resource_group == group)
    if workspace:
        q = q.where(Reservation.workspace == workspace)
    if user:
        q = q.where(Reservation.user == user)
    cpu, memory, gpu = session.execute(q).one()
    return Resources(cpu, memory, gpu)


def _over(used: Resources, limit: Resources, asked: Resources) -> list[str]:
    """The dimensions in which ``asked`` on top of ``used`` is over ``limit`` -- only those it
    asks for (a CPU-only instance is not refused because an admin lowered the GPU allocation)."""
    return [dim for dim in (used + asked).exceeding(limit) if getattr(asked, dim)]


@dataclass(frozen=True)
class Level:
    """One limit on a member's next instance in a resource group, and what of it is in use.
    Admission and the spawn form both use it, so the form never promises what admission refuses."""

    who: str  # "resource group gpu-a10", "workspace nlp", "member bob in workspace nlp"
    group: str | None  # named in a refusal of a workspace or member level
    limit: Resources
    used: Resources

    @property
    def free(self) -> Resources:
        return self.limit.left_after(self.used)

    def admits(self, asked: Resources) -> bool:
        return not _over(self.used, self.limit, asked)

    def check(self, asked: Resources) -> None:
        """Refuse if ``asked`` does not fit, saying what is in use and what was asked."""
        for dim in _over(self.used, self.limit, asked):
            raise QuotaExceeded(
                f"{self.who}: {self.used.amount(dim)} of {self.limit.amount(dim)} {Resources.unit(dim)} in use"
                f"{f' in group {self.group}' if self.group else ''}; this instance asks for {asked.amount(dim)}")


def headroom(session: Session, catalog: Catalog, workspace: str, user: str, group_id: str) -> list[Level]:
    """What limits the member's next instance in the group, outermost first: the group's
    capacity, the workspace's allocation (if any) and the member's cap (if any)."""
    group = catalog.resource_group(group_id)
    levels = [Level(f"resource group {group.id}", None, group.capacity.resources, usage(session, group.id))]
    ws_limit = allocation(catalog, session, workspace, group.id)
    if ws_limit is not None:
        levels.append(Level(f"workspace {workspace}", group.id, ws_limit.resources,
                            usage(session, group.id, workspace=workspace)))
    member_limit = member_quota(session, workspace, user, group.id)
    if member_limit is not None:
        levels.append(Level(f"member {user} in workspace {workspace}", group.id, member_limit.resources,
                            usage(session, group.id, workspace=workspace, user=user)))
    return levels


def _lock_group(session: Session, group: str) -> None:
    """Serialise admissions into one resource group (SQLite: already, by BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "READ COMMITTED"})
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(f"dsw-quota:{group}")})


def admit(sessions: sessionmaker, catalog: Catalog, spec: InstanceSpec) -> None:
    """Reserve the spec's resources or raise QuotaExceeded, which leaves nothing behind."""
    group = catalog.resource_group(spec.resource_group)
    asked = Resources.of(spec)
    with sessions() as s, s.begin():
        _lock_group(s, group.id)
        s.execute(delete(Reservation).where(Reservation.user == spec.user, Reservation.server == spec.server))
        for level in headroom(s, catalog, spec.workspace, spec.user, group.id):
            level.check(asked)
        s.add(Reservation(workspace=spec.workspace, user=spec.user, server=spec.server, resource_group=group.id,
                          kind=spec.kind.value, instance_type=spec.instance_type,
                          cpu=spec.cpu, memory=spec.memory, gpu=spec.gpu))


def release(sessions: sessionmaker, user: str, server: str) -> None:
    with sessions() as s, s.begin():
        s.execute(delete(Reservation).where(Reservation.user == user, Reservation.server == server))
