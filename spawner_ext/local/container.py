"""Pure builders: InstanceSpec -> Docker Engine API create-arguments. No I/O here."""

from __future__ import annotations

import re

from ..naming import container_name  # noqa: F401  (the backend's name rule lives in naming)
from .. import startup
from ..spec import MANAGED_LABEL, InstanceSpec, Mount

SERVER_PORT = 8888
#: the managed images' user (jovyan) and group (users): every instance runs as exactly this,
#: whatever the image says (a free-form image whose USER is root still runs as 1000:100)
INSTANCE_USER = "1000:100"
#: capabilities instances keep: none. The server, the terminal and code-server run as 1000,
#: which holds no capability anyway; dropping them all also empties the bounding set, so a
#: setuid-root binary cannot bring any back (and no-new-privileges keeps it from switching uid).
CAP_ADD: tuple[str, ...] = ()
#: no user namespace: podman's Docker API takes ``UsernsMode`` "auto", but the instance uid then
#: maps to a subordinate host uid, which can no longer use what the host hands it as uid 1000 --
#: NAS folders, s3fs mounts (uid=1000) and the home volumes. With uid 1000, no capability, and
#: no-new-privileges, no process in the container is root on the host to begin with.
SECURITY_OPT = ("no-new-privileges",)


def hostname(name: str) -> str:
    """What the terminal prompt shows: a DNS label after the server (or user) name. Display only,
    not an identity, so it may be lossy (identities come from ``naming``)."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-") or "dsw"


def mount_arg(mount: Mount) -> dict:
    """A Docker ``Mounts`` entry (API form) for one spec mount."""
    if mount.type == "volume":
        return {"Type": "volume", "Source": mount.source, "Target": mount.mount_path, "ReadOnly": mount.read_only}
    if mount.type in ("host", "oss"):
        arg = {"Type": "bind", "Source": mount.source, "Target": mount.mount_path, "ReadOnly": mount.read_only}
        if mount.type == "oss":
            # FUSE mounts made on the host after start must show up: slave propagation.
            arg["BindOptions"] = {"Propagation": "rslave"}
        return arg
    raise ValueError(f"mount type {mount.type!r} is not supported by the local backend")


def create_kwargs(spec: InstanceSpec, *, name: str, cmd: list[str], env: dict[str, str],
                  host_ip: str = "127.0.0.1", network: str | None = None,
                  pids_limit: int = 4096, attach_gpus: bool = True) -> dict:
    """Keyword arguments for ``docker.APIClient.create_container`` plus its host config."""
    labels = {**spec.labels, MANAGED_LABEL: "true"}
    host_config = {
        "Mounts": [mount_arg(m) for m in spec.all_mounts],
        "NanoCpus": int(spec.cpu * 1e9),
        "Memory": spec.memory,
        "PidsLimit": pids_limit,
        "PortBindings": {f"{SERVER_PORT}/tcp": [{"HostIp": host_ip, "HostPort": ""}]},
        "RestartPolicy": {"Name": "no"},
        "SecurityOpt": list(SECURITY_OPT),
        "CapDrop": ["ALL"],
        "CapAdd": list(CAP_ADD),
        "Privileged": False,
    }
    if network:
        host_config["NetworkMode"] = network
    if spec.gpu and attach_gpus:
        host_config["DeviceRequests"] = [{"Driver": "nvidia", "Count": spec.gpu, "Capabilities": [["gpu"]]}]
    return {
        "image": spec.image,
        "name": name,
        "command": startup.command(cmd, spec.startup_script),
        "environment": {**spec.env, **env, **startup.environment(spec.startup_script)},
        "labels": labels,
        "hostname": hostname(spec.server or spec.user),
        "user": INSTANCE_USER,
        "working_dir": spec.home.mount_path if spec.home else None,
        "ports": [SERVER_PORT],
        "host_config": host_config,
    }
