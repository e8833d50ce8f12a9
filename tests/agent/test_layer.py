"""The layer builder and the locator on real overlay upper directories made by podman
containers: every kind of change a member can make, compared with the layer's tar listing."""

from __future__ import annotations

import stat
import subprocess
import tarfile
import uuid

import pytest

from spawner_ext.agent import layer, locate

BASE = "localhost/dsw/debian:bookworm"

CHANGES = " && ".join([
    "echo new > /root/new.txt",                                   # a file added
    "echo changed >> /etc/debian_version",                        # a file changed
    "rm /etc/issue.net",                                          # a file deleted
    "rm -rf /etc/default && mkdir /etc/default && echo only > /etc/default/only",  # dir deleted, re-created
    "ln -s /root/new.txt /usr/local/bin/to-new",                  # a symlink
    "ln /root/new.txt /root/hard.txt",                            # a hard link
    "cp /bin/true /usr/local/bin/suid && chmod 4755 /usr/local/bin/suid",  # a setuid binary
    "mkdir /opt/other && echo x > /opt/other/f && chown -R 1234:5678 /opt/other",  # another owner
    "echo in-volume > /data/inside",                              # under a mount point
    "echo scratch > /tmp/scratch",                                # /tmp
])


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    vol = tmp_path_factory.mktemp("vol")
    name = f"agent-t-{uuid.uuid4().hex[:8]}"
    cid = subprocess.run(["podman", "run", "-d", "--name", name, "-v", f"{vol}:/data", BASE, "sleep", "infinity"],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["podman", "exec", name, "sh", "-c", CHANGES], check=True)
        yield cid
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


@pytest.fixture(scope="module")
def listing(box, tmp_path_factory):
    found = locate.writable_layer(box)
    out = tmp_path_factory.mktemp("layer") / "layer.tar.gz"
    built = layer.build(found.upperdir, str(out), excluded=[*found.mount_points, "/tmp"])
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    return found, built, members, out


def test_locator_finds_the_root_overlay_and_the_mount_points(box, listing):
    found = listing[0]
    pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", box], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert found.pid == int(pid)
    assert found.upperdir.endswith("/diff")
    assert "/data" in found.mount_points and "/proc" in found.mount_points and "/" not in found.mount_points


def test_changes_become_oci_entries(listing):
    _, built, members, out = listing
    assert members["etc/debian_version"].isfile()
    assert members["etc/.wh.issue.net"].isfile() and "etc/issue.net" not in members  # deletion -> whiteout
    assert members["etc/default"].isdir() and members["etc/default/.wh..wh..opq"].isfile()  # opaque dir
    assert members["etc/default/only"].isfile()
    link = members["usr/local/bin/to-new"]
    assert link.issym() and link.linkname == "/root/new.txt"
    hard = [members["root/hard.txt"], members["root/new.txt"]]
    assert sorted(m.type for m in hard) == sorted([tarfile.REGTYPE, tarfile.LNKTYPE])  # one stored, one linked
    stored = next(m for m in hard if m.isfile())
    assert next(m for m in hard if m.islnk()).linkname == stored.name
    assert {m.name for m in hard} == {"root/new.txt", "root/hard.txt"}
    suid = members["usr/local/bin/suid"]
    assert suid.mode & stat.S_ISUID and suid.mode & 0o777 == 0o755 and suid.uid == 0
    assert (members["opt/other/f"].uid, members["opt/other/f"].gid) == (1234, 5678)
    with tarfile.open(out) as tar:
        assert tar.extractfile("etc/default/only").read() == b"only\n"
        assert tar.extractfile("etc/debian_version").read().endswith(b"changed\n")
    assert built.size == out.stat().st_size and built.digest.startswith("sha256:")


def test_left_out_runtime_files_mounts_and_tmp(listing):
    members = listing[2]
    for name in ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", "data", "data/inside",
                 "tmp", "tmp/scratch", "proc", "run/.containerenv"):
        assert name not in members, name
    assert not [n for n in members if n.startswith(("data/", "tmp/"))]


def test_the_same_upperdir_gives_the_same_layer(listing, tmp_path):
    found, built = listing[0], listing[1]
    again = layer.build(found.upperdir, str(tmp_path / "again.tar.gz"), excluded=[*found.mount_points, "/tmp"])
    assert (again.digest, again.diff_id) == (built.digest, built.diff_id)


def test_a_cap_stops_the_build(listing, tmp_path):
    found = listing[0]
    with pytest.raises(layer.LayerTooLarge) as err:
        layer.build(found.upperdir, str(tmp_path / "big.tar.gz"), limit=10)
    assert "cap 10 bytes" in str(err.value)


def test_unknown_container_is_not_found():
    with pytest.raises(locate.NotFound):
        locate.writable_layer("0" * 64)
    with pytest.raises(locate.NotFound):
        locate.writable_layer("../etc")


def test_the_package_list_never_follows_a_members_symlink_onto_the_host(tmp_path):
    """A member owns /opt/dsw/venv: making site-packages a link to an absolute path would make
    the agent (reading through /proc/<pid>/root) list a HOST folder. Links are not followed."""
    from spawner_ext.agent import packages

    host_dir = tmp_path / "host-site"
    (host_dir / "hostonly-9.9.dist-info").mkdir(parents=True)
    name = f"agent-t-{uuid.uuid4().hex[:8]}"
    image = "localhost/dsw/notebook-cpu:2026.11.1"
    cid = subprocess.run(["podman", "run", "-d", "--name", name, image, "sleep", "infinity"], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        found = locate.writable_layer(cid)
        before = packages.of_instance(found.root)
        assert before == {"added": {}, "changed": {}, "removed": {}}
        subprocess.run(["podman", "exec", "-u", "1000:100", name, "sh", "-c",
                        "cd /opt/dsw/venv/lib/python3.11 && mv site-packages sp && "
                        f"ln -s {host_dir} site-packages"], check=True)
        after = packages.of_instance(found.root)
        assert "hostonly" not in str(after)
        assert after["removed"] and not after["added"]  # the environment reads as emptied, nothing of the host
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
