"""The effective catalogue: the YAML baseline with run-time changes from the database
(membership, saved images, lifecycle policy)."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .db import Allocation, MemberChange, MemberQuota, SavedImage, WorkspacePolicy
from .models import Accelerator, Capacity, Catalog, Image, Kind


def effective_catalog(catalog: Catalog, session: Session, viewer: str | None = None) -> Catalog:
    """Membership changes applied on top of the YAML members (role None removes), plus saved
    images as ``source: custom`` images of their workspace: published ones for everybody,
    private ones only in ``viewer``'s catalogue (the spawner passes the spawning user, the
    service the caller), so ``options.resolve`` stays pure and a private image simply does
    not exist for anybody else."""
    changes = session.scalars(select(MemberChange)).all()
    saved = saved_images(catalog, session, viewer)
    policies = {p.workspace: p for p in session.scalars(select(WorkspacePolicy))}
    if not changes and not saved and not policies:
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
        update = {"members": members}
        if ws.id in policies:  # set at run time by the workspace's owner/admins (None: platform bound)
            update["idle_max_minutes"] = policies[ws.id].idle_max_minutes
        workspaces.append(ws.model_copy(update=update))
    return catalog.model_copy(update={"workspaces": workspaces, "images": [*catalog.images, *saved]})


def saved_images(catalog: Catalog, session: Session, viewer: str | None = None) -> list[Image]:
    """Saved images ``viewer`` may launch: published ones, and their own private ones.
    Kinds and accelerator come from the catalogue image the instance ran; the pull secret is
    the workspace's ``image_pull_secret`` (the base image's may be for another registry)."""
    query = select(SavedImage).order_by(SavedImage.created_at)
    query = query.where(or_(SavedImage.published.is_(True), SavedImage.owner == viewer)) if viewer else \
        query.where(SavedImage.published.is_(True))
    out = []
    for row in session.scalars(query):
        base = catalog.image(row.base_image) if row.base_image else None
        ws = catalog.workspace(row.workspace)
        out.append(Image(
            id=row.id, display_name=f"{row.name} (saved by {row.owner}{'' if row.published else ', private'})",
            image=row.image, source="custom", workspaces=[row.workspace],
            accelerator=base.accelerator if base else Accelerator.cpu,
            kinds=list(base.kinds) if base else list(Kind),
            description=f"saved from {row.base_image or 'an instance'} on {row.created_at:%Y-%m-%d %H:%M} UTC",
            # Kubernetes pulls it from the saved-image registry with the workspace's secret
            pull_secret=ws.image_pull_secret if ws else None,
        ))
    return out


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
    return str(cap.resources)
