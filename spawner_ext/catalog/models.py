"""The catalogue's schema: what a platform team declares in YAML.

Pydantic validates shape and values (errors carry exact paths); cross references
between sections are checked in ``loader.py``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..quantities import QuantityError, parse_cpu, parse_memory
from ..roles import Role

ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
Id = Annotated[str, Field(pattern=ID_PATTERN, description="lower-case letters, digits and '-'")]
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class Kind(StrEnum):
    """Instance kinds: all three come from the same managed image."""

    notebook = "notebook"
    vscode = "vscode"
    terminal = "terminal"


class Accelerator(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cpu(value):
    if value is None:
        return value
    try:
        return parse_cpu(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _mem(value):
    if value is None:
        return value
    try:
        return parse_memory(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


class Workspace(Strict):
    id: Id
    display_name: str = ""
    members: dict[str, Role] = Field(default_factory=dict, description="username -> role")
    resource_groups: list[Id] = Field(default_factory=list, description="groups the workspace may use")
    registry_allowlist: list[str] = Field(default_factory=list)
    quotas: dict[str, "Capacity"] = Field(
        default_factory=dict, description="initial allocation per resource group (platform admins change it at run time)")

    @field_validator("members")
    @classmethod
    def _usernames(cls, members: dict[str, Role]) -> dict[str, Role]:
        for name in members:
            if not re.match(USERNAME_PATTERN, name):
                raise ValueError(f"member name {name!r} must match {USERNAME_PATTERN}")
        owners = [n for n, r in members.items() if r == Role.owner]
        if len(owners) > 1:
            raise ValueError(f"a workspace has one owner, found {len(owners)}: {', '.join(owners)}")
        return members


class Image(Strict):
    id: Id
    display_name: str = ""
    image: str = Field(min_length=1, description="image reference, e.g. registry/repo:tag")
    source: Literal["official", "custom"] = "official"
    accelerator: Accelerator = Accelerator.cpu
    kinds: list[Kind] = Field(default_factory=lambda: list(Kind), min_length=1)
    workspaces: list[str] = Field(default_factory=lambda: ["*"], description="workspace ids or '*'")
    description: str = ""
    pull_secret: str | None = Field(default=None, description="Kubernetes Secret with registry credentials")

    @field_validator("image")
    @classmethod
    def _reference(cls, ref: str) -> str:
        if any(c.isspace() for c in ref) or ref.startswith(("-", "/")):
            raise ValueError(f"{ref!r} is not an image reference")
        return ref

    def visible_in(self, workspace_id: str) -> bool:
        return "*" in self.workspaces or workspace_id in self.workspaces


class InstanceType(Strict):
    id: Id
    display_name: str = ""
    cpu: float
    memory: int
    gpu: int = Field(default=0, ge=0, le=64)
    gpu_type: str | None = None

    _cpu = field_validator("cpu", mode="before")(classmethod(lambda cls, v: _cpu(v)))
    _mem = field_validator("memory", mode="before")(classmethod(lambda cls, v: _mem(v)))


class Capacity(Strict):
    cpu: float
    memory: int
    gpu: int = Field(default=0, ge=0)

    _cpu = field_validator("cpu", mode="before")(classmethod(lambda cls, v: _cpu(v)))
    _mem = field_validator("memory", mode="before")(classmethod(lambda cls, v: _mem(v)))


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ResourceGroup(Strict):
    id: Id
    display_name: str = ""
    kind: Literal["public", "dedicated"] = "public"
    capacity: Capacity
    oversell: bool = Field(default=False, description="allow allocations beyond capacity")
    instance_types: list[Id] = Field(default_factory=list, description="empty: every type that fits")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class: str | None = None


Workspace.model_rebuild()


class Catalog(Strict):
    """The whole catalogue after loading (image metadata merged in)."""

    platform_admins: list[str] = Field(default_factory=list)
    workspaces: list[Workspace] = Field(default_factory=list)
    images: list[Image] = Field(default_factory=list)
    instance_types: list[InstanceType] = Field(default_factory=list)
    resource_groups: list[ResourceGroup] = Field(default_factory=list)

    def workspace(self, wid: str) -> Workspace | None:
        return next((w for w in self.workspaces if w.id == wid), None)

    def image(self, iid: str) -> Image | None:
        return next((i for i in self.images if i.id == iid), None)

    def instance_type(self, tid: str) -> InstanceType | None:
        return next((t for t in self.instance_types if t.id == tid), None)

    def resource_group(self, gid: str) -> ResourceGroup | None:
        return next((g for g in self.resource_groups if g.id == gid), None)

    def memberships(self, username: str) -> dict[str, Role]:
        """workspace id -> role, for every workspace the user belongs to."""
        return {w.id: w.members[username] for w in self.workspaces if username in w.members}

    def usernames(self) -> set[str]:
        names = set(self.platform_admins)
        for w in self.workspaces:
            names.update(w.members)
        return names

    def images_for(self, wid: str) -> list[Image]:
        return [i for i in self.images if i.visible_in(wid)]

    def groups_for(self, wid: str) -> list[ResourceGroup]:
        ws = self.workspace(wid)
        return [g for g in self.resource_groups if ws and g.id in ws.resource_groups]

    def types_for_group(self, group: ResourceGroup) -> list[InstanceType]:
        """Types that may run in ``group``: the listed ones, else every type that fits."""
        if group.instance_types:
            return [t for t in self.instance_types if t.id in group.instance_types]
        return [t for t in self.instance_types if t.gpu <= group.capacity.gpu]
