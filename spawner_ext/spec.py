"""The backend-neutral instance spec: everything a backend needs, nothing it decides."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from .catalog.models import Kind

HOME = "/home/jovyan"
MANAGED_LABEL = "dsw/managed"  # on everything DSW creates; nothing without it is ever touched

# Where each kind lands, relative to the server's base URL. Same image for all three.
START_URL: dict[Kind, str] = {
    Kind.notebook: "/lab",
    Kind.vscode: "/vscode/",
    Kind.terminal: "/lab/workspaces/dsw-terminal",
}


@dataclass(frozen=True)
class OssCredentials:
    """Where an OSS entry's keys live -- a reference, never the keys. Kubernetes reads
    ``secret`` (a Secret in the workspace namespace); one machine reads ``file`` or the
    hub's environment variables ``<env>_ACCESS_KEY_ID`` / ``<env>_SECRET_ACCESS_KEY``."""

    secret: str | None = None
    file: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class Mount:
    """A volume in the instance. ``source`` depends on ``type``:
    volume: a named engine volume / PVC; host: a host folder; nfs: ``server:/path``;
    oss: ``bucket`` or ``bucket/prefix``.

    Storage mounts (from the catalogue's ``storage`` section) also carry ``storage`` (the
    entry id); an nfs mount may carry ``host_source``, the folder where that export is
    mounted on the host (what one machine binds), and a NAS mount bound from the host carries
    ``host_root``, the entry's ``host_path``, which the bound folder must really stay under;
    an oss mount carries ``endpoint``, ``region`` and the ``credentials`` reference."""

    type: Literal["volume", "host", "nfs", "oss"]
    source: str
    mount_path: str
    read_only: bool = False
    name: str = ""
    storage: str = ""
    host_source: str = ""
    host_root: str = ""
    endpoint: str = ""
    region: str = ""
    credentials: OssCredentials | None = None

    @property
    def url(self) -> str:
        """How progress messages and errors name the storage (never with credentials)."""
        if self.type == "oss":
            return f"oss://{self.source}"
        if self.type == "nfs":
            return f"nfs://{self.source}"
        return self.source


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
    # lifecycle policy (spawner_ext/policy.py): minutes idle before the culler stops it (0 never),
    # a scheduled stop (naive UTC) and the member's start-up script ("" none)
    idle_minutes: float = 0.0
    stop_at: dt.datetime | None = None
    startup_script: str = ""

    def home_labels(self) -> dict[str, str]:
        """A home volume outlives instances of every kind: only who and where it belongs to."""
        return {"dsw/workspace": self.labels["dsw/workspace"], "dsw/user": self.labels["dsw/user"],
                MANAGED_LABEL: "true"}

    def describe(self) -> str:
        """One line for progress events, the same on both backends."""
        return (f"a {self.kind.value} instance in workspace {self.workspace} "
                f"({self.instance_type}, resource group {self.resource_group})")

    @property
    def all_mounts(self) -> tuple[Mount, ...]:
        return ((self.home,) if self.home else ()) + self.mounts
