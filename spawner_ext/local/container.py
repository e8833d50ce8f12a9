"""Pure builders: InstanceSpec -> Docker Engine API create-arguments. No I/O here."""

from __future__ import annotations

from ..options import safe_name
from ..spec import MANAGED_LABEL, InstanceSpec, Mount

SERVER_PORT = 8888


def container_name(user: str, server: str) -> str:
    base = f"dsw-{safe_name(user)}"
    return f"{base}--{safe_name(server)}" if server else base


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
    }
    if network:
        host_config["NetworkMode"] = network
    if spec.gpu and attach_gpus:
        host_config["DeviceRequests"] = [{"Driver": "nvidia", "Count": spec.gpu, "Capabilities": [["gpu"]]}]
    return {
        "image": spec.image,
        "name": name,
        "command": cmd,
        "environment": {**spec.env, **env},
        "labels": labels,
        "hostname": safe_name(spec.server or spec.user, 63),
        "working_dir": spec.home.mount_path if spec.home else None,
        "ports": [SERVER_PORT],
        "host_config": host_config,
    }
