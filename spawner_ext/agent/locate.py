"""Find a container's writable layer from /proc alone: no runtime API, no runtime CLI.

containerd, CRI-O, podman and Docker all put the container id into the cgroup path of the
container's processes (``libpod-<id>.scope``, ``cri-containerd-<id>.scope``,
``crio-<id>.scope``, ``docker-<id>.scope`` or ``/kubepods/.../<id>``). The init process is
the one whose parent is not in that cgroup. Its ``/proc/<pid>/mountinfo`` line for ``/`` is
the root overlay, whose super options name ``upperdir``; every other line is a mount point of
the instance (volumes, the home folder, /proc, /etc/hosts...), none of which belongs in an
image.

Reads another process's mount table: needs root and, on Kubernetes, ``hostPID``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

ID_RE = re.compile(r"^[0-9a-f]{12,64}$")


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Writable:
    pid: int
    upperdir: str
    mount_points: tuple[str, ...]  # container paths of every mount except /
    root: str  # /proc/<pid>/root: the container's file system as it sees it


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def pids_of(container_id: str, proc: str = "/proc") -> list[int]:
    if not ID_RE.fullmatch(container_id or ""):
        raise NotFound(f"not a container id: {container_id!r}")
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/cgroup") as f:
                if container_id in f.read():
                    found.append(int(entry))
        except OSError:
            continue  # the process ended while we looked
    return found


def init_pid(container_id: str, proc: str = "/proc") -> int:
    pids = set(pids_of(container_id, proc))
    for pid in sorted(pids):
        try:
            with open(f"{proc}/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid not in pids:
            return pid
    raise NotFound(f"no running process of container {container_id}")


def parse_mountinfo(text: str) -> tuple[str, list[str]]:
    """(upperdir of the root overlay, other mount points) from a mountinfo text."""
    upper, points = "", []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if not sep or len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        fstype, _source, *opts = post.split(" ", 2)
        if mount_point == "/":
            if fstype == "overlay":
                for opt in (opts[0] if opts else "").split(","):
                    if opt.startswith("upperdir="):
                        upper = _unescape(opt[len("upperdir="):])
        else:
            points.append(mount_point)
    return upper, points


def writable_layer(container_id: str, proc: str = "/proc") -> Writable:
    pid = init_pid(container_id, proc)
    with open(f"{proc}/{pid}/mountinfo") as f:
        upper, points = parse_mountinfo(f.read())
    if not upper:
        raise NotFound(f"container {container_id} has no overlay root (only overlay-based runtimes are supported)")
    return Writable(pid=pid, upperdir=upper, mount_points=tuple(sorted(set(points))), root=f"{proc}/{pid}/root")
