"""Build ONE OCI image layer (tar + gzip) from an overlay upper directory.

The upper directory of a container's root overlay holds exactly what the container changed:
new and modified files as themselves, deletions as whiteouts (a 0/0 character device) and
directories replaced as a whole as "opaque" (xattr ``trusted.overlay.opaque=y``, or
``user.overlay.opaque`` for rootless overlay). The OCI layer format says the same thing with
``.wh.<name>`` entries and ``.wh..wh..opq`` inside a directory, so the conversion is a walk.

Kept: modes including setuid/setgid/sticky, numeric owners, symlinks, hard links (as tar
links to the first path), modification times. Left out: ``excluded`` container paths and
everything under them (runtime-managed files, the home folder, mount points, /tmp).

Pure: reads a directory, writes a file; no engine, no registry, no HTTP.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# files the runtime writes into every container: never part of an image
RUNTIME_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab")
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


@dataclass(frozen=True)
class Layer:
    path: str  # the tar.gz file
    digest: str  # sha256 of the compressed file: the blob's name in the registry
    diff_id: str  # sha256 of the uncompressed tar: the config's rootfs.diff_ids entry
    size: int  # compressed bytes
    entries: int


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink, on_write: Callable[[int], None] | None = None):
        self.sink, self.sha, self.count, self.on_write = sink, hashlib.sha256(), 0, on_write

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self.sha.update(b)
        self.count += len(b)
        self.sink.write(b)
        if self.on_write:
            self.on_write(self.count)
        return len(b)


def normalise(paths: Iterable[str]) -> list[str]:
    """Container paths -> upperdir-relative paths without slashes at either end ("" = root)."""
    return sorted({p.strip("/") for p in paths if p and p.strip("/")})


def is_excluded(rel: str, excluded: list[str]) -> bool:
    return any(rel == ex or rel.startswith(ex + "/") for ex in excluded)


def _opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)  # keeps setuid, setgid and sticky bits
    ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
    ti.mtime = int(st.st_mtime)
    return ti


def _whiteout(parent: str, name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name)
    ti.mode, ti.mtime = 0o644, 0
    return ti


def entries(upperdir: str, excluded: Iterable[str] = ()) -> Iterable[tuple[tarfile.TarInfo, str | None]]:
    """(tar header, file to read or None) for every change in ``upperdir``, parents first,
    names sorted (the same upperdir gives the same layer)."""
    skip = normalise([*RUNTIME_FILES, *excluded])
    first_path_of: dict[tuple[int, int], str] = {}
    for top, dirs, files in os.walk(upperdir, topdown=True):
        rel_top = os.path.relpath(top, upperdir)
        rel_top = "" if rel_top == "." else rel_top
        dirs.sort()
        files.sort()
        if rel_top and _opaque(top):
            yield _whiteout(rel_top, OPAQUE_MARKER[len(WHITEOUT_PREFIX):]), None
        keep_dirs = []
        for name in dirs + files:
            rel = f"{rel_top}/{name}" if rel_top else name
            path = os.path.join(top, name)
            if is_excluded(rel, skip):
                continue
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                yield _whiteout(rel_top, name), None  # overlay whiteout: the lower file was deleted
                continue
            ti = _info(rel, st)
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                keep_dirs.append(name)
                yield ti, None
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
                yield ti, None
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in first_path_of:
                    ti.type, ti.linkname = tarfile.LNKTYPE, first_path_of[key]
                    yield ti, None
                    continue
                if st.st_nlink > 1:
                    first_path_of[key] = rel
                ti.size = st.st_size
                yield ti, path
            elif stat.S_ISFIFO(st.st_mode):
                ti.type = tarfile.FIFOTYPE
                yield ti, None
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                yield ti, None
            # sockets are not representable in a tar: left out
        dirs[:] = [d for d in dirs if d in keep_dirs]


def build(upperdir: str, out_path: str, excluded: Iterable[str] = (),
          progress: Callable[[int], None] | None = None, limit: int | None = None) -> Layer:
    """Write the layer of ``upperdir`` to ``out_path``. ``progress`` gets the compressed bytes
    written so far; ``limit`` (compressed bytes) raises LayerTooLarge as soon as it is passed."""
    count = 0
    with open(out_path, "wb") as out:
        def check(n: int) -> None:
            if limit is not None and n > limit:
                raise LayerTooLarge(n, limit)
            if progress:
                progress(n)
        compressed = _Hashing(out, check)
        # level 1: a save waits for this single-threaded compression; higher levels cost
        # seconds per 100 MB for a few per cent less to push (benchmarks/save_image.py)
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=1) as gz:
            raw = _Hashing(gz)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for ti, path in entries(upperdir, excluded):
                    count += 1
                    if path is None:
                        tar.addfile(ti)
                    else:
                        with open(path, "rb") as f:
                            tar.addfile(ti, f)
    return Layer(path=out_path, digest="sha256:" + compressed.sha.hexdigest(),
                 diff_id="sha256:" + raw.sha.hexdigest(), size=compressed.count, entries=count)


class LayerTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"the instance's new layer is larger than the workspace's cap: more than {size} bytes "
                         f"compressed, cap {limit} bytes")
