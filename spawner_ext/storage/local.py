"""One machine: NAS as a bind of a host folder, OSS as an s3fs FUSE mount on the host.

Layout (``root`` defaults to ``$DSW_STATE/mounts``, ``creds`` to ``$DSW_STATE/storage-credentials``)::

    <root>/<user>/<server or _>/<storage-id>        s3fs mount point, bound into the container
    <creds>/<user>/<server or _>/<storage-id>       s3fs passwd file, mode 0600, folders 0700

``<user>`` and ``<server>`` are ``naming.slug``s (injective, never ``_``, ``.`` or ``..``), so
two instances never share a folder. Folders below ``root`` are 0700 and owned by the instance
uid (1000): the s3fs mounts' ``allow_other`` lets the container's user in, while other host
users cannot even reach the mount point (issue 9, finding 12).

``root`` is bound onto itself and made rshared once, so the container's ``rslave`` bind sees
the FUSE mount. Everything for an instance is derived from (user, server): stop, a failed
start and the sweep at hub start find it without any saved state, and the keys never need
to be stored anywhere but the 0600 file.

Every function here blocks: call them in a thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..naming import DEFAULT_SERVER, container_name_of, server_slug, slug
from ..spec import InstanceSpec, Mount
from .credentials import Keys, StorageError, bucket_and_prefix

log = logging.getLogger("dsw.storage")
DEFAULT_SERVER_DIR = DEFAULT_SERVER  # a slug is never "_", so it cannot clash with a named server


def default_state() -> Path:
    return Path(os.environ.get("DSW_STATE", "/var/lib/dsw-hub"))


@dataclass(frozen=True)
class Layout:
    root: Path
    creds: Path

    @classmethod
    def under(cls, state: Path | str | None = None) -> "Layout":
        state = Path(state) if state else default_state()
        return cls(root=state / "mounts", creds=state / "storage-credentials")

    @staticmethod
    def names(user: str, server: str) -> tuple[str, str]:
        return slug(user), server_slug(server)

    def instance_dir(self, user: str, server: str) -> Path:
        u, s = self.names(user, server)
        return self.root / u / s

    def mount_point(self, user: str, server: str, storage: str) -> Path:
        return self.instance_dir(user, server) / storage

    def creds_file(self, user: str, server: str, storage: str) -> Path:
        u, s = self.names(user, server)
        return self.creds / u / s / storage


# --- mount table ---------------------------------------------------------------------
def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_points() -> dict[str, str]:
    """Mount point -> filesystem type, from this process's mount table."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            out[_unescape(left.split()[4])] = right.split()[0]
    return out


def is_mounted(path: Path | str) -> bool:
    return str(path) in mount_points()


def ensure_shared_root(root: Path) -> None:
    """Bind ``root`` onto itself and make it rshared (once), so container binds with rslave
    propagation see FUSE mounts made below it."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # others may pass through to their own 0700 folder, not list who has one
    if not is_mounted(root):
        subprocess.run(["mount", "--bind", str(root), str(root)], check=True, capture_output=True, timeout=10)
    subprocess.run(["mount", "--make-rshared", str(root)], check=True, capture_output=True, timeout=10)


def release_root(layout: Layout) -> bool:
    """Undo ``ensure_shared_root`` when nothing is mounted below it (tests, uninstall)."""
    if any(p.startswith(f"{layout.root}/") for p in mount_points()):
        return False
    while is_mounted(layout.root):
        if subprocess.run(["umount", str(layout.root)], capture_output=True, timeout=10).returncode:
            return False
    return True


# --- pure: what the container binds -------------------------------------------------
def bind_spec(spec: InstanceSpec, layout: Layout) -> InstanceSpec:
    """The spec as the local engine sees it: OSS mounts point at their host mount point,
    NAS (nfs) mounts at their host folder. Pure."""
    out = []
    for m in spec.mounts:
        if m.type == "oss":
            m = dataclasses.replace(m, source=str(layout.mount_point(spec.user, spec.server, m.storage)))
        elif m.type == "nfs":
            if not m.host_source:
                raise StorageError(f"storage {m.storage!r} is NFS only ({m.source}); one machine needs its "
                                   "host_path in the catalogue")
            m = dataclasses.replace(m, type="host", source=m.host_source)
        out.append(m)
    return dataclasses.replace(spec, mounts=tuple(out))


def s3fs_command(mount: Mount, mount_point: Path, creds_file: Path, *, s3fs: str = "s3fs",
                 uid: int = 1000, gid: int = 100, umask: str = "0077") -> list[str]:
    """The s3fs command line for one OSS mount. Pure; holds a file name, never a key."""
    bucket, prefix = bucket_and_prefix(mount)
    opts = [f"passwd_file={creds_file}", f"url={mount.endpoint.rstrip('/')}", "use_path_request_style",
            "allow_other", f"uid={uid}", f"gid={gid}", f"umask={umask}", f"mp_umask={umask}"]
    if mount.region:
        opts.append(f"endpoint={mount.region}")
    if mount.read_only:
        opts.append("ro")
    cmd = [s3fs, f"{bucket}:/{prefix}" if prefix else bucket, str(mount_point)]
    for o in opts:
        cmd += ["-o", o]
    return cmd


# --- NAS host folders -------------------------------------------------------------------
def nas_folder_problem(folder: str, root: str) -> str | None:
    """Why the host folder ``folder`` of a NAS entry whose ``host_path`` is ``root`` cannot be
    bound (None when it can). A member who can write in one NAS entry could plant a symlink in a
    sub-path of another (issue 9, finding 10); so no component from ``root`` down may be a
    symlink, and the real path must stay under the real ``root``. Blocking (lstat)."""
    if not root:
        return f"the NAS folder {folder} has no root to stay under"
    base, path = Path(root), Path(folder)
    try:
        rel = path.relative_to(base)
    except ValueError:
        return f"the NAS folder {folder} is not under the entry's host_path {root}"
    if not base.is_dir():
        return f"the NAS folder {root} does not exist on this machine (is the NAS mounted on the host?)"
    current = base
    for part in rel.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return f"the NAS folder {folder} does not exist on this machine (is the NAS mounted on the host?)"
        if stat.S_ISLNK(mode):
            return f"the NAS folder {folder} has a symbolic link at {current}: refused, it could lead anywhere"
        if not stat.S_ISDIR(mode):
            return f"the NAS folder {folder}: {current} is not a folder"
    real, real_root = os.path.realpath(folder), os.path.realpath(root)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        return f"the NAS folder {folder} resolves to {real}, outside the entry's host_path {root}"
    return None


# --- side effects ---------------------------------------------------------------------
def private_dirs(top: Path, leaf: Path, *, uid: int | None = None, gid: int | None = None) -> None:
    """Make ``leaf`` and its parents below ``top``, each 0700 (and owned by ``uid``:``gid`` when
    given): only that uid (and root) can reach what lies below."""
    top.mkdir(parents=True, exist_ok=True)
    current = top
    for part in leaf.relative_to(top).parts:
        current = current / part
        try:
            current.mkdir(mode=0o700)
        except FileExistsError:
            pass
        if current.is_symlink() or not current.is_dir():
            raise StorageError(f"{current} is not a folder")
        os.chmod(current, 0o700)
        if uid is not None:
            os.chown(current, uid, gid if gid is not None else -1)


def write_creds(path: Path, keys: Keys, top: Path | None = None) -> None:
    """The s3fs passwd file, mode 0600 from its creation, in 0700 folders (below ``top``)."""
    if top is not None:
        private_dirs(top, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{keys.access_key}:{keys.secret_key}\n")


def mount_oss(layout: Layout, user: str, server: str, mount: Mount, keys: Keys, *, s3fs: str = "s3fs",
              uid: int = 1000, gid: int = 100, timeout: float = 20) -> Path:
    """Write the passwd file, mount the bucket with s3fs, wait until the mount shows. On any
    failure undo both and raise StorageError."""
    ensure_shared_root(layout.root)
    point = layout.mount_point(user, server, mount.storage)
    creds = layout.creds_file(user, server, mount.storage)
    if is_mounted(point):
        unmount(point)
    # 0700 folders owned by the instance uid: allow_other lets the container's user (uid) in,
    # and no other host user can reach the mount point
    private_dirs(layout.root, point, uid=uid, gid=gid)
    write_creds(creds, keys, layout.creds)
    cmd = s3fs_command(mount, point, creds, s3fs=s3fs, uid=uid, gid=gid)
    try:
        # s3fs daemonises: its output goes to a file, never a pipe the daemon would hold open.
        with tempfile.TemporaryFile() as errors:
            try:
                rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                                    timeout=timeout).returncode
            except FileNotFoundError:
                raise StorageError(f"mounting {mount.url} failed: {s3fs} is not installed "
                                   "(scripts/setup.sh installs s3fs)") from None
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip()
        if rc != 0:
            raise StorageError(f"mounting {mount.url} failed: s3fs exited with {rc}: {text[-300:]}")
        deadline = time.monotonic() + timeout
        while not is_mounted(point):
            if time.monotonic() > deadline:
                raise StorageError(f"mounting {mount.url} failed: the mount did not appear within {timeout:.0f} s")
            time.sleep(0.05)
        return point
    except BaseException:
        unmount(point)
        creds.unlink(missing_ok=True)
        raise


def unmount(point: Path) -> None:
    """Unmount (lazily if busy) and remove the empty mount point. Idempotent."""
    if is_mounted(point):
        for cmd in (["fusermount", "-u", "-q", str(point)], ["umount", str(point)], ["umount", "-l", str(point)]):
            if shutil.which(cmd[0]) is None:
                continue
            subprocess.run(cmd, capture_output=True, timeout=20)
            if not is_mounted(point):
                break
        if is_mounted(point):
            raise StorageError(f"cannot unmount {point}")
    try:
        point.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("mount point %s not removed: %s", point, exc)


def release_instance(layout: Layout, user: str, server: str) -> list[str]:
    """Unmount every storage of an instance and remove its passwd files. Idempotent; returns
    what it removed (mount points and credential files)."""
    u, s = Layout.names(user, server)
    return _release(layout, u, s)


def _release(layout: Layout, u: str, s: str) -> list[str]:
    done: list[str] = []
    inst = layout.root / u / s
    mounted = {p for p in mount_points() if p.startswith(f"{inst}/")}
    points = set(mounted)
    if inst.is_dir():
        points.update(str(p) for p in inst.iterdir())
    problems = []
    for p in sorted(points, reverse=True):
        try:
            unmount(Path(p))
            done.append(p)
        except StorageError as exc:
            problems.append(str(exc))
    creds = layout.creds / u / s
    if creds.is_dir():
        for f in sorted(creds.iterdir()):
            f.unlink(missing_ok=True)
            done.append(str(f))
    for d in (inst, inst.parent, creds, creds.parent):
        try:
            d.rmdir()
        except OSError:
            pass
    if problems:
        raise StorageError("; ".join(problems))
    return done


def container_of(u: str, s: str) -> str:
    """The container name (``naming``'s rule) of an instance folder's (user, server) slugs."""
    return container_name_of(u, s)


def sweep(layout: Layout, running: Iterable[str]) -> list[str]:
    """At hub start: release every instance folder and passwd file whose container is not in
    ``running`` (names of running containers). Returns what it removed."""
    running = set(running)
    found: set[tuple[str, str]] = set()
    if layout.root.is_dir():
        for udir in layout.root.iterdir():
            if udir.is_dir():
                found.update((udir.name, sdir.name) for sdir in udir.iterdir() if sdir.is_dir())
    for p in mount_points():  # mounts whose folders vanished
        if p.startswith(f"{layout.root}/"):
            parts = Path(p).relative_to(layout.root).parts
            if len(parts) >= 2:
                found.add((parts[0], parts[1]))
    if layout.creds.is_dir():
        for udir in layout.creds.iterdir():
            if udir.is_dir() and not udir.is_symlink():
                found.update((udir.name, sdir.name) for sdir in udir.iterdir() if sdir.is_dir())
            else:  # a file of an older layout (<user>--<server>--<storage>): keys to drop
                udir.unlink()
    removed: list[str] = []
    for u, s in sorted(x for x in found if container_of(*x) not in running):
        try:
            removed += _release(layout, u, s)
        except StorageError as exc:
            log.warning("stale storage of %s/%s not fully removed: %s", u, s, exc)
    return removed


def sweep_with_engine(layout: Layout, engine_url: str, timeout: float = 30) -> list[str]:
    """``sweep`` keeping what running DSW containers use."""
    import docker

    client = docker.DockerClient(base_url=engine_url, timeout=timeout)
    try:
        running = {c.name for c in client.containers.list(filters={"label": "dsw/managed=true",
                                                                       "status": "running"})}
        return sweep(layout, running)
    finally:
        client.close()
