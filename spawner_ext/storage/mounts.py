"""The ``mounts`` spawn option + the catalogue's storage entries -> spec Mounts. Pure.

Option shape (REST body, or the form's hidden field as JSON text)::

    "mounts": [{"storage": "team-nas"},
               {"storage": "datasets", "mount_path": "/mnt/ds", "read_only": true}]

A member may move a mount and narrow read-write to read-only, never widen. Refusals raise
``MountError(field, message)``; ``options.resolve`` turns them into 400s.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from ..catalog.models import Catalog, Storage
from ..spec import HOME, Mount, OssCredentials
from .paths import mount_path_problem, overlaps, render_sub_path

MOUNT_KEYS = {"storage", "mount_path", "read_only"}


class MountError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError:
            raise MountError("mounts", "must be a list of {storage, mount_path?, read_only?} "
                                       "(or that list as JSON text)") from None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and value[0].lstrip().startswith("["):
        return _as_list(value[0])  # the form's hidden field arrives as a one-element list
    if not isinstance(value, list):
        raise MountError("mounts", f"must be a list, got {type(value).__name__}")
    return value


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off"):
        return value.lower() in ("true", "1", "on")
    raise MountError(field, f"must be true or false, got {value!r}")


def storage_mount(entry: Storage, *, workspace: str, user_dir: str, server_dir: str,
                  mount_path: str, read_only: bool) -> Mount:
    """One catalogue entry as a backend-neutral Mount."""
    name = f"storage-{entry.id}"
    if entry.nas:
        sub = render_sub_path(entry.nas.sub_path_template, workspace=workspace, user=user_dir, server=server_dir)
        join = (lambda base: posixpath.join(base, sub) if sub else base)
        host = join(entry.nas.host_path) if entry.nas.host_path else ""
        if entry.nas.nfs:
            return Mount(type="nfs", source=f"{entry.nas.nfs.server}:{join(entry.nas.nfs.path)}",
                         mount_path=mount_path, read_only=read_only, name=name, storage=entry.id, host_source=host,
                         host_root=entry.nas.host_path or "")
        return Mount(type="host", source=host, mount_path=mount_path, read_only=read_only, name=name,
                     storage=entry.id, host_root=entry.nas.host_path)
    oss = entry.oss
    c = oss.credentials
    return Mount(type="oss", source=f"{oss.bucket}/{oss.prefix}" if oss.prefix else oss.bucket,
                 mount_path=mount_path, read_only=read_only, name=name, storage=entry.id,
                 endpoint=oss.endpoint, region=oss.region,
                 credentials=OssCredentials(secret=c.secret, file=c.file, env=c.env))


def resolve_mounts(catalog: Catalog, workspace: str, value: Any, *, user_dir: str, server_dir: str,
                   home: str = HOME) -> tuple[Mount, ...]:
    """Validate the ``mounts`` option for ``workspace``; ``user_dir``/``server_dir`` are the safe
    names the NAS sub-path template receives."""
    if value is None or value == "" or value == []:
        return ()
    items = _as_list(value)
    offered = {s.id: s for s in catalog.storage_for(workspace)}
    mounts: list[Mount] = []
    for i, item in enumerate(items):
        where = f"mounts[{i}]"
        if isinstance(item, str):
            item = {"storage": item}
        if not isinstance(item, dict):
            raise MountError(where, f"must be an object {{storage, mount_path?, read_only?}}, got {type(item).__name__}")
        unknown = sorted(set(item) - MOUNT_KEYS)
        if unknown:
            raise MountError(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(MOUNT_KEYS))})")
        sid = item.get("storage")
        if not isinstance(sid, str) or not sid:
            raise MountError(f"{where}.storage", "names a storage entry of the workspace")
        entry = offered.get(sid)
        if entry is None:
            choices = ", ".join(sorted(offered)) or "none"
            raise MountError(f"{where}.storage", f"workspace {workspace!r} has no storage {sid!r} (offered: {choices})")
        if any(m.storage == sid for m in mounts):
            raise MountError(f"{where}.storage", f"storage {sid!r} is mounted twice")
        path = item.get("mount_path")
        if path is None or path == "":
            path = entry.mount_path
        problem = mount_path_problem(path, home)
        if problem:
            raise MountError(f"{where}.mount_path", f"storage {sid!r}: mount path {path!r} {problem}")
        for other in mounts:
            if overlaps(path, other.mount_path):
                raise MountError(f"{where}.mount_path", f"storage {sid!r}: mount path {path!r} overlaps "
                                                        f"{other.mount_path!r} of storage {other.storage!r}")
        read_only = entry.read_only
        if "read_only" in item and item["read_only"] is not None:
            asked = _bool(item["read_only"], f"{where}.read_only")
            if not asked and entry.read_only:
                raise MountError(f"{where}.read_only", f"storage {sid!r} is read-only; a mount may narrow "
                                                       "read-write to read-only, never widen")
            read_only = asked
        mounts.append(storage_mount(entry, workspace=workspace, user_dir=user_dir, server_dir=server_dir,
                                    mount_path=path, read_only=read_only))
    return tuple(mounts)
