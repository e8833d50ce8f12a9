"""Issue 9, findings 4, 5 and 10, sent as a hostile member sends them: the member's own token,
the hub's REST API, real podman containers from the managed image.

  4  ``mounts`` on ``//etc`` (the kernel's /etc) -> 400 naming the field, nothing made;
  5  inside a running instance: uid 1000 / gid 100, no capability, a setuid-root binary does not
     make root, and a free-form image whose USER is root still runs as 1000;
  6  user ``h-a--b``'s spawn leaves user ``h-a``'s server ``b`` alone (they shared a container
     name, so the stale-container cleanup removed the victim's container);
  10 a NAS sub-path that is a symlink to ``/`` (or a chain of them) -> 400, nothing made.

The symlinks are planted on the host, as the member would plant them from another instance
through a read-write NAS mount (same file system, same operation).
"""

from __future__ import annotations

import io
import os
import re

import pytest
import yaml

from spawner_ext.naming import container_name
from tests.integration.conftest import ROOT, engine, engine_url, make_catalog  # noqa: F401 (fixtures)
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration
WS = "hsec"
USERS = {"h-alice": "owner", "h-eve": "developer", "h-a": "developer", "h-a--b": "developer"}
ROOT_IMAGE = "localhost/hsec/root-image:1"


def managed_image() -> str:
    data = yaml.safe_load((ROOT / "images" / "images.yaml").read_text())
    return next(i["image"] for i in data["images"] if i["id"] == "notebook-cpu")


def cleanup(engine) -> None:  # noqa: F811
    for c in engine.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if c.labels.get("dsw/user", "").startswith("h-"):
            c.remove(force=True)
    for v in engine.volumes.list(filters={"label": "dsw/managed=true"}):
        if v.attrs.get("Labels", {}).get("dsw/user", "").startswith("h-"):
            v.remove(force=True)


@pytest.fixture(scope="module")
def root_image(engine):  # noqa: F811
    """A free-form image that starts as root and carries a setuid-root copy of ``id``."""
    recipe = (f"FROM {managed_image()}\nUSER root\n"
              "RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id\n")
    engine.images.build(fileobj=io.BytesIO(recipe.encode()), tag=ROOT_IMAGE, rm=True, pull=False)
    yield ROOT_IMAGE


@pytest.fixture(scope="module")
def shub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("hostile-instances")
    homes, scratch = tmp / "nas-homes", tmp / "nas-scratch"
    for d in (homes / "h-alice", scratch):
        d.mkdir(parents=True)
        d.chmod(0o777)
    storage = [
        {"id": "homes", "workspaces": [WS], "mount_path": "/mnt/homes", "access": "rw",
         "nas": {"host_path": str(homes), "sub_path_template": "{user}"}},
        {"id": "scratch", "workspaces": [WS], "mount_path": "/mnt/scratch", "access": "rw",
         "nas": {"host_path": str(scratch)}},
    ]
    cleanup(engine)
    catalog = make_catalog(tmp, platform_admins=["h-root"], storage=storage, workspaces=[
        {"id": WS, "members": dict(USERS), "resource_groups": ["cpu"], "registry_allowlist": ["localhost/hsec"]}])
    h = Hub(tmp / "state", catalog, engine_url)
    h.start()
    h.tokens = {u: h.user_token(u) for u in USERS}
    h.nas = {"homes": homes, "scratch": scratch}
    yield h
    h.stop()
    cleanup(engine)


def own_spawn(h, user, server, body):
    """The member's own request: ``POST /hub/api/users/<me>/servers/<name>`` with their token."""
    path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
    r = h.api("POST", path, token=h.tokens[user], json=body, timeout=120)
    if r.status_code == 202:
        h.wait_ready(user, server)
    return r


def made_for(engine, user, server):  # noqa: F811
    return engine.containers.list(all=True, filters={"name": container_name(user, server)})


# --- finding 4 -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["//etc", "//usr", "//home/jovyan"])
def test_mount_on_a_double_slash_system_folder_is_refused(shub, engine, path):  # noqa: F811
    r = own_spawn(shub, "h-eve", "slash", {"workspace": WS, "kind": "terminal",
                                           "mounts": [{"storage": "scratch", "mount_path": path}]})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "mounts[0].mount_path" in message and repr(path) in message and "normalised" in message
    assert not made_for(engine, "h-eve", "slash")


# --- finding 6 --------------------------------------------------------------------------------

def test_a_user_named_like_another_users_server_leaves_it_alone(shub, engine):  # noqa: F811
    r = own_spawn(shub, "h-a", "b", {"workspace": WS, "kind": "terminal"})
    assert r.status_code in (201, 202), r.text
    victim = engine.containers.get(container_name("h-a", "b"))
    try:
        r = own_spawn(shub, "h-a--b", "", {"workspace": WS, "kind": "terminal"})
        assert r.status_code in (201, 202), r.text
        attacker = engine.containers.get(container_name("h-a--b", ""))
        assert attacker.id != victim.id
        victim.reload()
        assert victim.status == "running" and victim.labels["dsw/user"] == "h-a"
        assert shub.server_model("h-a", "b")["ready"]
        home = lambda c: next(m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/home/jovyan")
        assert home(victim) != home(attacker)
    finally:
        assert shub.api("DELETE", "/users/h-a--b/server", token=shub.tokens["h-a--b"]).status_code in (202, 204)
        shub.stop_server("h-a", "b")
        shub.wait_stopped("h-a--b", "")


# --- finding 10 ------------------------------------------------------------------------------

def test_nas_sub_path_symlinked_to_slash_is_refused(shub, engine):  # noqa: F811
    (shub.nas["homes"] / "h-eve").symlink_to("/")
    try:
        r = own_spawn(shub, "h-eve", "link", {"workspace": WS, "kind": "terminal", "mounts": [{"storage": "homes"}]})
        assert r.status_code == 400, r.text
        assert "symbolic link" in r.json()["message"] and "storage 'homes'" in r.json()["message"]
        assert not made_for(engine, "h-eve", "link")
    finally:
        (shub.nas["homes"] / "h-eve").unlink()


def test_nas_sub_path_symlink_chain_out_of_the_root_is_refused(shub, engine):  # noqa: F811
    # planted through the read-write "scratch" entry: homes/h-eve -> scratch/hop -> /etc
    hop = shub.nas["scratch"] / "hop"
    hop.symlink_to("/etc")
    (shub.nas["homes"] / "h-eve").symlink_to(hop)
    try:
        r = own_spawn(shub, "h-eve", "chain", {"workspace": WS, "kind": "terminal", "mounts": [{"storage": "homes"}]})
        assert r.status_code == 400, r.text
        assert "symbolic link" in r.json()["message"]
        assert not made_for(engine, "h-eve", "chain")
    finally:
        (shub.nas["homes"] / "h-eve").unlink()
        hop.unlink()


def test_a_real_nas_folder_still_mounts(shub, engine):  # noqa: F811
    r = own_spawn(shub, "h-alice", "nasok", {"workspace": WS, "kind": "terminal", "mounts": [{"storage": "homes"}]})
    assert r.status_code in (201, 202), r.text
    box = engine.containers.get(container_name("h-alice", "nasok"))
    out = box.exec_run(["sh", "-c", "touch /mnt/homes/mine && stat -c %u:%g /mnt/homes/mine"])
    assert out.exit_code == 0 and out.output.decode().strip() == "1000:100", out.output
    assert os.stat(shub.nas["homes"] / "h-alice" / "mine").st_uid == 1000
    shub.stop_server("h-alice", "nasok")


# --- finding 5 -------------------------------------------------------------------------------

def status_of(box, pid: str) -> dict[str, str]:
    out = box.exec_run(["cat", f"/proc/{pid}/status"]).output.decode()
    return dict(re.findall(r"^(\w+):\s*(.*)$", out, flags=re.M))


def test_free_form_root_image_runs_as_1000_without_capabilities(shub, engine, root_image):  # noqa: F811
    r = own_spawn(shub, "h-alice", "rootimg", {"workspace": WS, "kind": "terminal", "image_ref": root_image})
    assert r.status_code in (201, 202), r.text
    box = engine.containers.get(container_name("h-alice", "rootimg"))
    try:
        # the server itself (PID 1, started by the engine) and a process started in the instance
        for pid in ("1", "self"):
            st = status_of(box, pid)
            assert st["Uid"].split()[:2] == ["1000", "1000"] and st["Gid"].split()[:2] == ["100", "100"], st
            assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0 and int(st["CapBnd"], 16) == 0, st
            assert st["NoNewPrivs"] == "1", st
        # the setuid-root binary in the image does not make root
        assert box.exec_run(["stat", "-c", "%u %A", "/usr/local/bin/suid-id"]).output.decode().split() == \
            ["0", "-rwsr-xr-x"]
        out = box.exec_run(["/usr/local/bin/suid-id", "-u"])
        assert out.exit_code == 0 and out.output.decode().strip() == "1000", out.output
        # nor does asking for root any other way
        assert box.exec_run(["su", "-c", "id -u"]).exit_code != 0
        # and the server answers through the hub as usual
        assert shub.server_model("h-alice", "rootimg")["ready"]
    finally:
        shub.stop_server("h-alice", "rootimg")
