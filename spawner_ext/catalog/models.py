"""The catalogue's schema: what a platform team declares in YAML.

Pydantic validates shape and values (errors carry exact paths); cross references
between sections are checked in ``loader.py``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..quantities import parse_cpu, parse_memory
from ..resources import Resources
from ..roles import Role
from ..storage.paths import host_path_problem, mount_path_problem, sub_path_template_problem

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


# Quantities (``2``, ``500m``, ``16Gi``) through the one parser; its errors are ValueErrors,
# so pydantic reports them at the field's path.
Cpu = Annotated[float, BeforeValidator(parse_cpu)]
Memory = Annotated[int, BeforeValidator(parse_memory)]


class Workspace(Strict):
    id: Id
    display_name: str = ""
    members: dict[str, Role] = Field(default_factory=dict, description="username -> role")
    resource_groups: list[Id] = Field(default_factory=list, description="groups the workspace may use")
    registry_allowlist: list[str] = Field(default_factory=list)
    quotas: dict[str, "Capacity"] = Field(
        default_factory=dict, description="initial allocation per resource group (platform admins change it at run time)")
    saved_layer_cap: Memory | None = Field(
        default=None, gt=0, description="largest new layer (compressed) a save may push, e.g. 2Gi; none: no cap")
    idle_max_minutes: float | None = Field(
        default=None, gt=0, description="longest idle time (minutes) a member may choose for an instance; owners "
                                        "and admins change it at run time, within the platform's bound; none: the "
                                        "platform's bound")
    image_pull_secret: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Kubernetes Secret in the workspace namespace for the saved-image registry: "
                    "instances launched from this workspace's saved images pull with it")

    @field_validator("members")
    @classmethod
    def _usernames(cls, members: dict[str, Role]) -> dict[str, Role]:
        for name in members:
            if not re.fullmatch(USERNAME_PATTERN, name):
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
    cpu: Cpu
    memory: Memory
    gpu: int = Field(default=0, ge=0, le=64)
    gpu_type: str | None = None


class Capacity(Strict):
    cpu: Cpu
    memory: Memory
    gpu: int = Field(default=0, ge=0)

    @property
    def resources(self) -> Resources:
        """The same amount as the value type quota checks add and compare."""
        return Resources.of(self)


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


class NfsExport(Strict):
    """An NFS export (Kubernetes mounts it as an ``nfs`` volume)."""

    server: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[?[0-9a-fA-F:.]+\]?$",
                        description="host name or IP address of the NFS server")
    path: str = Field(description="exported path, absolute")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        problem = host_path_problem(value)
        if problem:
            raise ValueError(f"export path {value!r} {problem}")
        return value


class NasStorage(Strict):
    """A NAS: ``nfs`` for Kubernetes, ``host_path`` (where the NAS is mounted on the host) for one
    machine; give either or both. ``sub_path_template`` narrows both to a folder below them."""

    nfs: NfsExport | None = None
    host_path: str | None = Field(default=None, description="host folder, for the one-machine backend")
    sub_path_template: str = Field(default="", description="e.g. '{workspace}/{user}'; placeholders "
                                                           "{workspace}, {user}, {server}")

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, value: str | None) -> str | None:
        problem = value is not None and host_path_problem(value)
        if problem:
            raise ValueError(f"host_path {value!r} {problem}")
        return value

    @field_validator("sub_path_template")
    @classmethod
    def _template(cls, value: str) -> str:
        problem = sub_path_template_problem(value)
        if problem:
            raise ValueError(f"sub_path_template {value!r} {problem}")
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if self.nfs is None and self.host_path is None:
            raise ValueError("a NAS entry needs nfs (Kubernetes) or host_path (one machine), or both")
        return self


ENV_PREFIX_PATTERN = r"^[A-Z_][A-Z0-9_]{0,63}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class OssCredentialsRef(Strict):
    """Where the keys are -- never the keys themselves."""

    secret: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN,
                               description="Kubernetes Secret (in the workspace namespace) with the keys")
    file: str | None = Field(default=None, description="one machine: file with ACCESS_KEY:SECRET_KEY, or "
                                                       "aws_access_key_id= / aws_secret_access_key= lines")
    env: str | None = Field(default=None, pattern=ENV_PREFIX_PATTERN,
                            description="one machine: the hub reads <env>_ACCESS_KEY_ID and <env>_SECRET_ACCESS_KEY")

    @field_validator("file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        problem = value is not None and host_path_problem(value)
        if problem:
            raise ValueError(f"credentials file {value!r} {problem}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_keys(cls, data):
        if isinstance(data, dict):
            keyish = [k for k in data if any(w in str(k).lower() for w in ("key", "password", "token"))]
            if keyish:
                raise ValueError(f"{keyish[0]!r}: keys never go in the catalogue; reference them with "
                                 "secret, file or env")
        return data

    @model_validator(mode="after")
    def _some(self):
        if not (self.secret or self.file or self.env):
            raise ValueError("give at least one of secret (Kubernetes), file or env (one machine)")
        return self


BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class OssStorage(Strict):
    """An S3-compatible bucket (optionally a prefix in it)."""

    endpoint: str = Field(pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$", description="S3 endpoint URL")
    bucket: str = Field(pattern=BUCKET_PATTERN)
    prefix: str = Field(default="", description="folder in the bucket, e.g. 'team/data'")
    region: str = Field(default="", pattern=r"^[a-z0-9-]*$")
    credentials: OssCredentialsRef

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value and (".." in value.split("/") or "//" in value or not re.fullmatch(r"^[A-Za-z0-9._/-]+$", value)):
            raise ValueError(f"prefix {value!r} must be a plain relative path (letters, digits, '.', '_', '-', '/')")
        return value


class Storage(Strict):
    """A storage entry members of the listed workspaces may mount: ``nas`` or ``oss``."""

    id: Id
    display_name: str = ""
    description: str = ""
    workspaces: list[str] = Field(min_length=1, description="workspace ids or '*'")
    mount_path: str = Field(description="default mount path in the instance")
    access: Literal["ro", "rw"] = Field(default="ro", description="default (and widest) access")
    nas: NasStorage | None = None
    oss: OssStorage | None = None

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        problem = mount_path_problem(value)
        if problem:
            raise ValueError(f"mount path {value!r} {problem}")
        return value

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.nas is None) == (self.oss is None):
            raise ValueError("a storage entry is either nas or oss (exactly one of them)")
        return self

    @property
    def type(self) -> str:
        return "nas" if self.nas else "oss"

    @property
    def read_only(self) -> bool:
        return self.access == "ro"

    def visible_in(self, workspace_id: str) -> bool:
        return "*" in self.workspaces or workspace_id in self.workspaces


Workspace.model_rebuild()


class Catalog(Strict):
    """The whole catalogue after loading (image metadata merged in)."""

    platform_admins: list[str] = Field(default_factory=list)
    workspaces: list[Workspace] = Field(default_factory=list)
    images: list[Image] = Field(default_factory=list)
    instance_types: list[InstanceType] = Field(default_factory=list)
    resource_groups: list[ResourceGroup] = Field(default_factory=list)
    storage: list[Storage] = Field(default_factory=list, description="NAS and OSS entries members may mount")

    def storage_entry(self, sid: str) -> Storage | None:
        return next((s for s in self.storage if s.id == sid), None)

    def storage_for(self, wid: str) -> list[Storage]:
        return [s for s in self.storage if s.visible_in(wid)]

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
