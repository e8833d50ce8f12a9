"""What the service changes: members, allocations, member quotas, saved images, the audit log.

Each function validates against the effective catalogue, refuses with ``OpError``
(status + message) and writes in one transaction, so a refusal changes nothing.
"""

from __future__ import annotations

import json

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..catalog.db import (Allocation, AuditEvent, MemberChange, MemberQuota, Reservation, SavedImage,
                          WorkspaceShare)
from ..catalog.live import allocation, describe, effective_catalog
from ..catalog.models import USERNAME_PATTERN, Capacity, Catalog
from ..quota import usage
from ..roles import Role

import re


class OpError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass
class Ctx:
    """One request: the YAML catalogue, a DB session, who is acting."""

    base: Catalog
    session: Session
    actor: str

    @property
    def catalog(self) -> Catalog:
        return effective_catalog(self.base, self.session, viewer=self.actor)

    def audit(self, action: str, workspace: str, target: str, outcome: str, detail: str = "") -> None:
        self.session.add(AuditEvent(actor=self.actor, action=action, workspace=workspace, target=target,
                                    outcome=outcome, detail=detail))


def workspace_or_404(cat: Catalog, ws: str):
    w = cat.workspace(ws)
    if w is None:
        raise OpError(404, f"unknown workspace {ws!r}")
    return w


def set_member(ctx: Ctx, ws: str, user: str, role: Role, *, actor_role: str | None, source: str = "admin") -> None:
    cat = ctx.catalog
    w = workspace_or_404(cat, ws)
    if not re.fullmatch(USERNAME_PATTERN, user):
        raise OpError(400, f"member name {user!r} must match {USERNAME_PATTERN}")
    current = w.members.get(user)
    if current == Role.owner and role != Role.owner and actor_role != Role.owner and actor_role != "platform":
        raise OpError(403, f"{user} is the owner of {ws}; only the owner or a platform admin can change that")
    if role == Role.owner and current != Role.owner:
        if actor_role not in (Role.owner, "platform"):
            raise OpError(403, "only the owner or a platform admin can name a new owner")
        old = [u for u, r in w.members.items() if r == Role.owner]
        for u in old:  # one owner: the old owner becomes an admin
            ctx.session.merge(MemberChange(workspace=ws, user=u, role=Role.admin.value, source=source))
    ctx.session.merge(MemberChange(workspace=ws, user=user, role=role.value, source=source))


def remove_member(ctx: Ctx, ws: str, user: str, *, actor_role: str | None) -> None:
    w = workspace_or_404(ctx.catalog, ws)
    if user not in w.members:
        raise OpError(404, f"{user} is not a member of {ws}")
    if w.members[user] == Role.owner and actor_role != "platform":
        raise OpError(403, f"{user} is the owner of {ws} and cannot be removed")
    ctx.session.merge(MemberChange(workspace=ws, user=user, role=None))
    ctx.session.execute(delete(MemberQuota).where(MemberQuota.workspace == ws, MemberQuota.user == user))


MAX = Capacity(cpu=100_000, memory=2**60, gpu=10_000)


def _bounded(cap: Capacity) -> None:
    for dim in ("cpu", "memory", "gpu"):
        if getattr(cap, dim) > getattr(MAX, dim):
            raise OpError(400, f"{dim} {getattr(cap, dim)} is larger than any machine ({getattr(MAX, dim)})")


def set_allocation(ctx: Ctx, ws: str, group: str, cap: Capacity) -> None:
    cat = ctx.catalog
    workspace_or_404(cat, ws)
    g = cat.resource_group(group)
    if g is None:
        raise OpError(404, f"unknown resource group {group!r}")
    _bounded(cap)
    if not g.oversell:
        for dim in ("cpu", "memory", "gpu"):
            others = 0
            for w in cat.workspaces:
                if w.id == ws:
                    continue
                a = allocation(ctx.base, ctx.session, w.id, group)
                others += getattr(a, dim) if a else 0
            if others + getattr(cap, dim) > getattr(g.capacity, dim):
                raise OpError(409, f"resource group {group}: other workspaces hold {others:g} of {getattr(g.capacity, dim):g} "
                                   f"{dim}; {getattr(cap, dim):g} more would exceed its capacity (the group does not allow overselling)")
    ctx.session.merge(Allocation(workspace=ws, resource_group=group, cpu=cap.cpu, memory=cap.memory, gpu=cap.gpu))


def remove_allocation(ctx: Ctx, ws: str, group: str) -> None:
    row = ctx.session.get(Allocation, (ws, group))
    if row is None:
        raise OpError(404, f"workspace {ws} has no allocation in {group}")
    ctx.session.delete(row)


def set_member_quota(ctx: Ctx, ws: str, user: str, group: str, cap: Capacity) -> None:
    cat = ctx.catalog
    w = workspace_or_404(cat, ws)
    if user not in w.members:
        raise OpError(404, f"{user} is not a member of {ws}")
    if group not in w.resource_groups:
        raise OpError(404, f"workspace {ws} has no resource group {group!r}")
    _bounded(cap)
    limit = allocation(ctx.base, ctx.session, ws, group) or cat.resource_group(group).capacity
    for dim in ("cpu", "memory", "gpu"):
        if getattr(cap, dim) > getattr(limit, dim):
            raise OpError(409, f"a member quota of {getattr(cap, dim):g} {dim} exceeds workspace {ws}'s "
                               f"{getattr(limit, dim):g} in {group}")
    ctx.session.merge(MemberQuota(workspace=ws, user=user, resource_group=group, cpu=cap.cpu, memory=cap.memory,
                                  gpu=cap.gpu))


def overview(ctx: Ctx, ws: str) -> dict:
    cat = ctx.catalog
    w = workspace_or_404(cat, ws)
    groups = []
    for g in cat.groups_for(ws):
        a = allocation(ctx.base, ctx.session, ws, g.id)
        used = usage(ctx.session, g.id, workspace=ws)
        groups.append({
            "id": g.id, "display_name": g.display_name, "kind": g.kind,
            "capacity": g.capacity.model_dump(), "quota": a.model_dump() if a else None,
            "quota_text": describe(a) if a else "no workspace quota (group capacity applies)",
            "used": {"cpu": used.cpu, "memory": used.memory, "gpu": used.gpu},
            "member_quotas": [
                {"user": q.user, "cpu": q.cpu, "memory": q.memory, "gpu": q.gpu}
                for q in ctx.session.scalars(select(MemberQuota).where(
                    MemberQuota.workspace == ws, MemberQuota.resource_group == g.id))
            ],
        })
    return {
        "id": w.id, "display_name": w.display_name,
        "members": [{"user": u, "role": r.value if hasattr(r, "value") else r} for u, r in sorted(w.members.items())],
        "images": [{"id": i.id, "display_name": i.display_name, "image": i.image, "accelerator": i.accelerator.value,
                    "source": i.source, "kinds": [k.value for k in i.kinds]} for i in cat.images_for(ws)],
        "instance_types": sorted({t.id for g in cat.groups_for(ws) for t in cat.types_for_group(g)}),
        "resource_groups": groups,
    }


def instances(ctx: Ctx, ws: str) -> list[dict]:
    workspace_or_404(ctx.catalog, ws)
    rows = ctx.session.scalars(select(Reservation).where(Reservation.workspace == ws).order_by(Reservation.id))
    return [{"user": r.user, "server": r.server, "kind": r.kind, "resource_group": r.resource_group,
             "instance_type": r.instance_type, "cpu": r.cpu, "memory": r.memory, "gpu": r.gpu,
             "since": r.created_at.isoformat() + "Z"} for r in rows]


def instance_workspace(session: Session, user: str, server: str) -> str | None:
    r = session.scalars(select(Reservation).where(Reservation.user == user, Reservation.server == server)).first()
    return r.workspace if r else None


def shares(session: Session, ws: str) -> list[tuple[str, str]]:
    rows = session.scalars(select(WorkspaceShare).where(WorkspaceShare.workspace == ws))
    return [(r.owner, r.server) for r in rows]


def share(ctx: Ctx, ws: str, owner: str, server: str) -> None:
    if instance_workspace(ctx.session, owner, server) != ws:
        raise OpError(404, f"no running instance {owner}/{server or 'default'} in workspace {ws}")
    ctx.session.merge(WorkspaceShare(workspace=ws, owner=owner, server=server))


def unshare(ctx: Ctx, ws: str, owner: str, server: str) -> None:
    row = ctx.session.get(WorkspaceShare, (ws, owner, server))
    if row is None:
        raise OpError(404, f"{owner}/{server or 'default'} is not shared with {ws}")
    ctx.session.delete(row)


# --- saved images (the engine part is spawner_ext/snapshots.py) ---------------------------
def image_row(img: SavedImage) -> dict:
    return {"id": img.id, "workspace": img.workspace, "owner": img.owner, "name": img.name, "image": img.image,
            "base_image": img.base_image, "created_at": img.created_at.isoformat() + "Z",
            "published": img.published, "size": img.size, "layer_bytes": img.layer_bytes or 0,
            "packages": json.loads(img.packages) if img.packages else None}


def saved_images(ctx: Ctx, ws: str, *, all_private: bool = False) -> list[dict]:
    """Published images and the caller's own private ones; with ``all_private`` (those who may
    publish) every member's private images too, so they can be published or deleted."""
    workspace_or_404(ctx.catalog, ws)
    rows = ctx.session.scalars(select(SavedImage).where(SavedImage.workspace == ws).order_by(SavedImage.created_at))
    return [image_row(r) for r in rows if r.published or all_private or r.owner == ctx.actor]


def saved_image_or_404(ctx: Ctx, ws: str, image_id: str) -> SavedImage:
    workspace_or_404(ctx.catalog, ws)
    row = ctx.session.get(SavedImage, image_id)
    if row is None or row.workspace != ws:
        raise OpError(404, f"workspace {ws} has no saved image {image_id!r}")
    return row


def record_saved_image(ctx: Ctx, ws: str, image_id: str, name: str, ref: str, base_image: str, size: int,
                       packages: dict | None = None, layer_bytes: int = 0) -> dict:
    row = SavedImage(id=image_id, workspace=ws, owner=ctx.actor, name=name, image=ref, base_image=base_image,
                     size=size, published=False, packages=json.dumps(packages) if packages is not None else "",
                     layer_bytes=layer_bytes)
    ctx.session.add(row)
    ctx.session.flush()
    return image_row(row)


def publish_image(ctx: Ctx, ws: str, image_id: str) -> dict:
    row = saved_image_or_404(ctx, ws, image_id)
    row.published = True
    return image_row(row)
