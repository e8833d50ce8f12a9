"""The one-machine storage layer on the host: s3fs mounts against SeaweedFS, passwd files,
release and the sweep at hub start. Needs root, /dev/fuse and s3fs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from spawner_ext.catalog.models import Kind
from spawner_ext.naming import container_name
from spawner_ext.spec import InstanceSpec, Mount, OssCredentials
from spawner_ext.storage import local
from spawner_ext.storage.credentials import Keys, StorageError

from .conftest import BUCKET, READONLY_BUCKET

@pytest.fixture
def fuse_ready():
    """s3fs, /dev/fuse and root are install steps of scripts/setup.sh --test: missing means a failure."""
    if not (shutil.which("s3fs") and os.path.exists("/dev/fuse") and os.geteuid() == 0):
        pytest.fail("needs root, /dev/fuse and s3fs (scripts/setup.sh --test installs s3fs)")


needs_fuse = pytest.mark.usefixtures("fuse_ready")


def oss(s3, source=BUCKET, read_only=False, storage="data", mount_path="/mnt/data"):
    return Mount(type="oss", source=source, mount_path=mount_path, read_only=read_only, storage=storage,
                 endpoint=s3.endpoint, credentials=OssCredentials(env="T"), name=f"storage-{storage}")


@pytest.fixture
def layout(tmp_path):
    lay = local.Layout.under(tmp_path)
    yield lay
    local.sweep(lay, running=())
    assert local.release_root(lay)


def test_s3fs_command_names_a_file_never_a_key(s3):
    cmd = local.s3fs_command(dataclasses.replace(oss(s3, "bkt/team/x", read_only=True), region="eu-1"),
                             local.Path("/m"), local.Path("/c"))
    assert cmd[:3] == ["s3fs", "bkt:/team/x", "/m"]
    opts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-o"]
    assert {"passwd_file=/c", f"url={s3.endpoint}", "use_path_request_style", "allow_other", "uid=1000", "gid=100",
            "endpoint=eu-1", "ro"} <= set(opts)
    assert not any(s3.member[1] in a for a in cmd)


def test_bind_spec_points_at_host_folders(tmp_path):
    lay = local.Layout.under(tmp_path)
    spec = InstanceSpec(user="Al.ice", server="", workspace="w", kind=Kind.notebook, start_url="/lab", image_id="i",
                        image="img", pull_secret=None, instance_type="t", cpu=1, memory=1, gpu=0, gpu_type=None,
                        resource_group="g", mounts=(
                            Mount(type="oss", source="b/p", mount_path="/mnt/o", storage="o"),
                            Mount(type="nfs", source="nas:/e/w", mount_path="/mnt/n", storage="n", host_source="/srv/e/w"),
                            Mount(type="host", source="/srv/h", mount_path="/mnt/h", storage="h", read_only=True)))
    bound = local.bind_spec(spec, lay)
    u = local.Layout.names("Al.ice", "")[0]
    assert [(m.type, m.source) for m in bound.mounts] == [
        ("oss", str(tmp_path / "mounts" / u / "_" / "o")), ("host", "/srv/e/w"), ("host", "/srv/h")]
    assert bound.mounts[2].read_only
    nfs_only = dataclasses.replace(spec, mounts=(Mount(type="nfs", source="nas:/e", mount_path="/m", storage="n"),))
    with pytest.raises(StorageError, match="NFS only"):
        local.bind_spec(nfs_only, lay)


@needs_fuse
def test_read_write_mount_both_ways(s3, layout):
    m = oss(s3)
    point = local.mount_oss(layout, "t-host", "nb", m, Keys(*s3.member))
    creds = layout.creds_file("t-host", "nb", "data")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    assert local.mount_points()[str(point)] == "fuse.s3fs"
    (point / "from-host.txt").write_text("written through s3fs\n")
    assert point.stat().st_uid == 1000 and (point / "from-host.txt").stat().st_uid == 1000
    got = s3.client().get_object(Bucket=BUCKET, Key="from-host.txt")["Body"].read()
    assert got == b"written through s3fs\n"
    s3.client().put_object(Bucket=BUCKET, Key="from-s3.txt", Body=b"written with boto3\n")
    assert (point / "from-s3.txt").read_text() == "written with boto3\n"
    removed = local.release_instance(layout, "t-host", "nb")
    assert str(point) in removed and str(creds) in removed
    assert not local.is_mounted(point) and not point.exists() and not creds.exists()
    assert local.release_instance(layout, "t-host", "nb") == []  # idempotent


@needs_fuse
def test_read_only_mount_refuses_writes(s3, layout):
    point = local.mount_oss(layout, "t-host", "ro", oss(s3, f"{READONLY_BUCKET}/shared", read_only=True),
                            Keys(*s3.member))
    assert (point / "readme.txt").read_text() == "read only data\n"
    with pytest.raises(OSError):
        (point / "nope.txt").write_text("x")


@needs_fuse
def test_failed_mount_leaves_nothing(s3, layout):
    with pytest.raises(StorageError, match="s3fs"):
        local.mount_oss(layout, "t-host", "bad", oss(s3), Keys(*s3.member), s3fs="/nonexistent/s3fs")
    assert not layout.creds_file("t-host", "bad", "data").exists()
    assert not layout.mount_point("t-host", "bad", "data").exists()


@needs_fuse
def test_sweep_releases_what_no_running_container_uses(s3, layout):
    keep = local.mount_oss(layout, "t-host", "alive", oss(s3), Keys(*s3.member))
    gone = local.mount_oss(layout, "t-host", "", oss(s3), Keys(*s3.member))
    stray = layout.creds / "garbage"
    stray.write_text("x")
    removed = local.sweep(layout, running={container_name("t-host", "alive")})
    assert str(gone) in removed and not local.is_mounted(gone)
    assert not layout.creds_file("t-host", "", "data").exists() and not stray.exists()
    assert local.is_mounted(keep) and layout.creds_file("t-host", "alive", "data").exists()
    local.sweep(layout, running=())
    assert not local.is_mounted(keep) and not layout.creds_file("t-host", "alive", "data").exists()


@needs_fuse
def test_other_host_users_cannot_reach_a_mount(s3):
    """Issue 9, finding 12: the s3fs mount (allow_other) and its folders are the instance uid's
    alone. The state folder is one every host user may pass through (0711), so only the DSW's
    own modes stand between another user and the bucket."""
    state = local.Path(tempfile.mkdtemp(prefix="dsw-s3fs-", dir="/tmp"))
    state.chmod(0o711)
    lay = local.Layout.under(state)
    try:
        point = local.mount_oss(lay, "st-carol", "nb", oss(s3), Keys(*s3.member))
        s3.client().put_object(Bucket=BUCKET, Key="private.txt", Body=b"carol's\n")
        assert stat.S_IMODE(lay.root.stat().st_mode) == 0o711
        for folder in (point.parent.parent, point.parent, point):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 1000, folder
        assert stat.S_IMODE((point / "private.txt").stat().st_mode) & 0o077 == 0

        def as_uid(uid: int, gid: int, *cmd: str):
            return subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", *cmd],
                                  capture_output=True, text=True, timeout=30)

        for who in ((4242, 4242), (65534, 65534), (1001, 100)):  # other users, one in the same group
            listed = as_uid(*who, "ls", str(point))
            assert listed.returncode != 0 and "Permission denied" in listed.stderr, (who, listed)
            read = as_uid(*who, "cat", str(point / "private.txt"))
            assert read.returncode != 0 and "carol" not in read.stdout, who
            assert as_uid(*who, "ls", str(lay.root)).returncode != 0, who  # nor list whose mounts exist
        mine = as_uid(1000, 100, "cat", str(point / "private.txt"))
        assert mine.returncode == 0 and mine.stdout == "carol's\n", mine.stderr
    finally:
        local.sweep(lay, running=())
        assert local.release_root(lay)
        shutil.rmtree(state)
