"""The effective catalogue: the YAML baseline with run-time changes from the database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..quantities import format_memory
from .db import Allocation, MemberChange, MemberQuota
from .models import Capacity, Catalog


def effective_catalog(catalog: Catalog, session: Session) -> Catalog:
    """Membership changes applied on top of the YAML members (role None removes)."""
    changes = session.scalars(select(MemberChange)).all()
    if not changes:
        return catalog
    by_ws: dict[str, list[MemberChange]] = {}
    for ch in changes:
        by_ws.setdefault(ch.workspace, []).append(ch)
    workspaces = []
    for ws in catalog.workspaces:
        members = dict(ws.members)
        for ch in by_ws.get(ws.id, []):
            if ch.role is None:
                members.pop(ch.user, None)
            else:
                members[ch.user] = ch.role
        workspaces.append(ws.model_copy(update={"members": members}))
    return catalog.model_copy(update={"workspaces": workspaces})


def allocation(catalog: Catalog, session: Session, workspace: str, group: str) -> Capacity | None:
    """The workspace's quota in the group: the database's, else the YAML baseline, else none."""
    row = session.get(Allocation, (workspace, group))
    if row is not None:
        return Capacity(cpu=row.cpu, memory=row.memory, gpu=row.gpu)
    ws = catalog.workspace(workspace)
    return ws.quotas.get(group) if ws else None


def member_quota(session: Session, workspace: str, user: str, group: str) -> Capacity | None:
    row = session.get(MemberQuota, (workspace, user, group))
    return Capacity(cpu=row.cpu, memory=row.memory, gpu=row.gpu) if row else None


def describe(cap: Capacity) -> str:
    return f"{cap.cpu:g} CPU, {format_memory(cap.memory)} memory, {cap.gpu} GPU"
