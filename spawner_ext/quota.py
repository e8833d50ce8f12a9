"""Admission: check and reserve quota in one atomic step; release on stop or failure.

Limits, all checked: the resource group's capacity (all workspaces together), the
workspace's allocation in that group, and the member's cap inside the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from .catalog.db import Reservation
from .catalog.live import allocation, member_quota
from .catalog.models import Capacity, Catalog
from .quantities import format_memory
from .spec import InstanceSpec

_UNITS = {"cpu": "CPUs", "memory": "memory", "gpu": "GPUs"}


class QuotaExceeded(Exception):
    """Refused admission; the message says what is in use and what was asked."""


@dataclass(frozen=True)
class Usage:
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0


def usage(session: Session, group: str, workspace: str | None = None, user: str | None = None) -> Usage:
    q = select(func.coalesce(func.sum(Reservation.cpu), 0.0), func.coalesce(func.sum(Reservation.memory), 0),
               func.coalesce(func.sum(Reservation.gpu), 0)).where(Reservation.resource_group == group)
    if workspace:
        q = q.where(Reservation.workspace == workspace)
    if user:
        q = q.where(Reservation.user == user)
    cpu, mem, gpu = session.execute(q).one()
    return Usage(float(cpu), int(mem), int(gpu))


def _amount(dim: str, value: float) -> str:
    if dim == "memory":
        return format_memory(int(value))
    return f"{value:g}"


def _check(who: str, group: str | None, used: Usage, limit: Capacity, spec: InstanceSpec) -> None:
    for dim in ("gpu", "cpu", "memory"):
        asked = getattr(spec, dim)
        if asked and getattr(used, dim) + asked > getattr(limit, dim):
            unit = _UNITS[dim]
            raise QuotaExceeded(
                f"{who}: {_amount(dim, getattr(used, dim))} of {_amount(dim, getattr(limit, dim))} {unit} in use"
                f"{f' in group {group}' if group else ''}; this instance asks for {_amount(dim, asked)}")


def admit(sessions: sessionmaker, catalog: Catalog, spec: InstanceSpec) -> None:
    """Reserve the spec's resources or raise QuotaExceeded. Atomic: the transaction takes
    the database's write lock before reading usage (see catalog/db.py)."""
    group = catalog.resource_group(spec.resource_group)
    with sessions() as s, s.begin():
        s.execute(delete(Reservation).where(Reservation.user == spec.user, Reservation.server == spec.server))
        _check(f"resource group {group.id}", None, usage(s, group.id), group.capacity, spec)
        ws_limit = allocation(catalog, s, spec.workspace, group.id)
        if ws_limit is not None:
            _check(f"workspace {spec.workspace}", group.id, usage(s, group.id, workspace=spec.workspace), ws_limit, spec)
        member_limit = member_quota(s, spec.workspace, spec.user, group.id)
        if member_limit is not None:
            _check(f"member {spec.user} in workspace {spec.workspace}", group.id,
                   usage(s, group.id, workspace=spec.workspace, user=spec.user), member_limit, spec)
        s.add(Reservation(workspace=spec.workspace, user=spec.user, server=spec.server, resource_group=group.id,
                          kind=spec.kind.value, instance_type=spec.instance_type,
                          cpu=spec.cpu, memory=spec.memory, gpu=spec.gpu))


def release(sessions: sessionmaker, user: str, server: str) -> None:
    with sessions() as s, s.begin():
        s.execute(delete(Reservation).where(Reservation.user == user, Reservation.server == server))
