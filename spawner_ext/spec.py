"""The backend-neutral instance spec: everything a backend needs, nothing it decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .catalog.models import Kind

HOME = "/home/jovyan"

# Where each kind lands, relative to the server's base URL. Same image for all three.
START_URL: dict[Kind, str] = {
    Kind.notebook: "/lab",
    Kind.vscode: "/vscode/",
    Kind.terminal: "/lab/workspaces/dsw-terminal",
}


@dataclass(frozen=True)
class Mount:
    """A volume in the instance. ``source`` depends on ``type``:
    volume: a named engine volume / PVC; host: a host folder; nfs: ``server:/path``;
    oss: a storage-entry id resolved by the storage layer."""

    type: Literal["volume", "host", "nfs", "oss"]
    source: str
    mount_path: str
    read_only: bool = False
    name: str = ""


@dataclass(frozen=True)
class InstanceSpec:
    user: str
    server: str
    workspace: str
    kind: Kind
    start_url: str
    image_id: str
    image: str
    pull_secret: str | None
    instance_type: str
    cpu: float
    memory: int
    gpu: int
    gpu_type: str | None
    resource_group: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    priority_class: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    home: Mount | None = None
    mounts: tuple[Mount, ...] = ()

    @property
    def all_mounts(self) -> tuple[Mount, ...]:
        return ((self.home,) if self.home else ()) + self.mounts
