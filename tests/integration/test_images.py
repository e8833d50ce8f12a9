"""Save a running instance as an image: a real hub, real containers and a real registry
(Debian's docker-registry on loopback, plain HTTP). The roles rows "save own instance as
an image" and "publish an image to the workspace, delete workspace images", launching
from a saved image, private vs published, and a failing push that leaves nothing behind."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
import yaml

from .conftest import cleanup_engine, make_catalog
from .hubproc import Hub, free_port

pytestmark = pytest.mark.integration

WS = "svision"
MEMBERS = {"s-alice": "owner", "s-adam": "admin", "s-bob": "developer", "s-olga": "ops",
           "s-lara": "labeler", "s-vic": "visitor"}
USER = {role: user for user, role in MEMBERS.items()}
TERMINAL = {"workspace": WS, "kind": "terminal"}


class Registry:
    def __init__(self, root):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = root / "registry.yml"
        self.config.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }))
        self.log = root / "registry.log"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def catalog(self) -> list[str]:
        return requests.get(f"http://{self.host}/v2/_catalog", timeout=5).json()["repositories"]


def remove_saved_images(engine, prefix: str) -> None:
    for img in engine.images.list():
        for tag in img.tags:
            if tag.startswith(prefix):
                engine.api.remove_image(tag, force=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def shub(tmp_path_factory, engine, engine_url, registry):
    tmp = tmp_path_factory.mktemp("images")
    cleanup_engine(engine, "s-")
    catalog = make_catalog(tmp, platform_admins=["s-root"], workspaces=[
        {"id": WS, "members": dict(MEMBERS), "resource_groups": ["cpu"]},
    ])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={
        "DSW_SERVER_LIMIT": "0", "DSW_IMAGE_REGISTRY": f"{registry.host}/dsw", "DSW_IMAGE_REGISTRY_TLS_VERIFY": "0"})
    h.prefix = f"{registry.host}/dsw/"
    h.start()
    h.tokens = {u: h.user_token(u) for u in [*MEMBERS, "s-root"]}
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "s-")
    remove_saved_images(engine, h.prefix)


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}",
                            headers={"Authorization": f"token {h.tokens[user]}"}, timeout=300, **kw)


def spawn(h, user, server, **options):
    r = h.api("POST", f"/users/{user}/servers/{server}", token=h.tokens[user], json={**TERMINAL, **options},
              timeout=180)
    if r.status_code == 202:
        h.wait_ready(user, server)
    return r


def local_tags(engine, prefix) -> set[str]:
    return {t for img in engine.images.list() for t in img.tags if t.startswith(prefix)}


def listing(h):
    return svc(h, "s-root", "GET", f"/workspaces/{WS}/images").json()


@pytest.fixture(scope="module")
def saved(shub, engine, registry):
    """s-bob (developer) writes a file outside the home volume and saves the instance."""
    assert spawn(shub, "s-bob", "src").status_code in (201, 202)
    box = engine.containers.get("dsw-s-bob--src")
    assert box.exec_run(["sh", "-c", "echo made-in-src > /tmp/marker && echo home > /home/jovyan/in-home"]).exit_code == 0
    r = svc(shub, "s-bob", "POST", f"/workspaces/{WS}/images", json={"server": "src", "name": "with-marker"})
    assert r.status_code == 201, r.text
    img = r.json()
    shub.stop_server("s-bob", "src")
    return img


def test_save_push_and_launch_from_saved_image(shub, engine, registry, saved):
    assert saved["id"].startswith("saved-") and saved["owner"] == "s-bob" and not saved["published"]
    assert saved["pushed"] and saved["image"] == f"{shub.prefix}{WS}/s-bob-with-marker:{saved['id']}"
    assert f"dsw/{WS}/s-bob-with-marker" in registry.catalog()
    tags = requests.get(f"http://{registry.host}/v2/dsw/{WS}/s-bob-with-marker/tags/list", timeout=5).json()
    assert saved["id"] in tags["tags"]
    # the instance's credentials are not baked into the image
    env = engine.api.inspect_image(saved["image"])["Config"]["Env"]
    assert not [e for e in env if e.startswith("JUPYTERHUB_API_TOKEN=") and e != "JUPYTERHUB_API_TOKEN="]
    # a new instance from the saved image sees the file
    assert spawn(shub, "s-bob", "again", image=saved["id"]).status_code in (201, 202)
    box = engine.containers.get("dsw-s-bob--again")
    assert box.labels["dsw/image"] == saved["id"] and box.attrs["Config"]["Image"] == saved["image"]
    assert box.exec_run(["cat", "/tmp/marker"]).output.decode().strip() == "made-in-src"
    # deleting is refused while an instance runs from it, and changes nothing
    r = svc(shub, "s-alice", "DELETE", f"/workspaces/{WS}/images/{saved['id']}")
    assert r.status_code == 409 and "dsw-s-bob--again" in r.json()["detail"]
    assert saved["id"] in {i["id"] for i in listing(shub)}
    shub.stop_server("s-bob", "again")


def test_pages_list_saved_images(shub, saved):
    def page(user):
        return requests.get(f"{shub.url}/services/dsw/workspaces/{WS}", timeout=60, allow_redirects=False,
                            headers={"Authorization": f"token {shub.tokens[user]}", "Accept": "text/html"})
    owner, dev, ops_ = page("s-alice"), page("s-bob"), page("s-olga")
    assert owner.status_code == 200 and saved["id"] in owner.text and ">Publish</button>" in owner.text
    assert saved["id"] in dev.text and ">Publish</button>" not in dev.text  # the creator sees it, cannot publish
    assert saved["id"] not in ops_.text  # private: not another member's


def test_private_until_published(shub, engine, saved):
    # another builder of the workspace cannot see or launch the private image
    assert saved["id"] not in {i["id"] for i in svc(shub, "s-olga", "GET", f"/workspaces/{WS}/images").json()}
    r = shub.api("POST", "/users/s-olga/servers/other", token=shub.tokens["s-olga"],
                 json={**TERMINAL, "image": saved["id"]})
    assert r.status_code == 400 and saved["id"] in r.text
    assert not engine.containers.list(all=True, filters={"label": "dsw/user=s-olga"})
    # refused publishers change nothing
    for role in ("developer", "ops", "labeler", "visitor"):
        r = svc(shub, USER[role], "POST", f"/workspaces/{WS}/images/{saved['id']}/publish")
        assert r.status_code == 403, (role, r.text)
        r = svc(shub, USER[role], "DELETE", f"/workspaces/{WS}/images/{saved['id']}")
        assert r.status_code == 403, (role, r.text)
    row = next(i for i in listing(shub) if i["id"] == saved["id"])
    assert not row["published"] and saved["image"] in local_tags(engine, shub.prefix)
    # the owner publishes: every builder may launch it and sees it among the workspace's images
    r = svc(shub, "s-alice", "POST", f"/workspaces/{WS}/images/{saved['id']}/publish")
    assert r.status_code == 200 and r.json()["published"]
    overview = svc(shub, "s-olga", "GET", f"/workspaces/{WS}").json()
    assert {"id": saved["id"], "source": "custom"}.items() <= next(
        i for i in overview["images"] if i["id"] == saved["id"]).items()
    assert spawn(shub, "s-olga", "other", image=saved["id"]).status_code in (201, 202)
    out = engine.containers.get("dsw-s-olga--other").exec_run(["cat", "/tmp/marker"]).output.decode()
    assert out.strip() == "made-in-src"
    shub.stop_server("s-olga", "other")
    audit = svc(shub, "s-root", "GET", "/audit").json()
    assert any(a["action"] == "publish-image" and a["outcome"] == "ok" and a["actor"] == "s-alice" for a in audit)
    assert any(a["action"] == "publish-image" and a["outcome"] == "refused" and a["actor"] == "s-bob" for a in audit)


@pytest.mark.parametrize("role", ["owner", "admin", "ops"])
def test_builders_save_their_own_instances_and_managers_delete(shub, engine, registry, role):
    user = USER[role]
    assert spawn(shub, user, "mine").status_code in (201, 202)
    r = svc(shub, user, "POST", f"/workspaces/{WS}/images", json={"server": "mine", "name": f"{role}-img"})
    assert r.status_code == 201, r.text
    img = r.json()
    shub.stop_server(user, "mine")
    assert f"dsw/{WS}/{user}-{role}-img" in registry.catalog()
    # owners/admins delete: the row, the local tag and the registry's manifest go
    deleter = "s-adam" if role == "owner" else "s-alice"
    r = svc(shub, deleter, "DELETE", f"/workspaces/{WS}/images/{img['id']}")
    assert r.status_code == 200 and r.json()["registry"] == "ok", r.text
    assert img["id"] not in {i["id"] for i in listing(shub)}
    assert img["image"] not in local_tags(engine, shub.prefix)
    tags = requests.get(f"http://{registry.host}/v2/dsw/{WS}/{user}-{role}-img/tags/list", timeout=5).json()
    assert not tags.get("tags")


def test_labeler_and_visitor_cannot_save(shub, engine, saved):
    assert spawn(shub, "s-bob", "victim").status_code in (201, 202)
    before, tags = listing(shub), local_tags(engine, shub.prefix)
    for role in ("labeler", "visitor"):
        for body in ({"user": "s-bob", "server": "victim", "name": "stolen"}, {"server": "victim", "name": "stolen"}):
            r = svc(shub, USER[role], "POST", f"/workspaces/{WS}/images", json=body)
            assert r.status_code == 403, (role, r.text)
    # a builder cannot save somebody else's instance either
    r = svc(shub, "s-olga", "POST", f"/workspaces/{WS}/images", json={"user": "s-bob", "server": "victim", "name": "x"})
    assert r.status_code == 403 and "own instances" in r.json()["detail"]
    assert listing(shub) == before and local_tags(engine, shub.prefix) == tags
    audit = svc(shub, "s-root", "GET", "/audit").json()
    assert any(a["action"] == "save-image" and a["outcome"] == "refused" and a["actor"] == "s-lara" for a in audit)
    shub.stop_server("s-bob", "victim")


BAD = [
    ({"server": "src", "name": "Bad_Name"}, 400, "image name"),
    ({"server": "src", "name": "x" * 31}, 400, "image name"),
    ({"server": "src"}, 400, "name"),
    ({"server": "src", "name": "ok", "color": "red"}, 400, "color"),
    ({"server": "nothing-here", "name": "ok"}, 404, "no running instance"),
]


@pytest.mark.parametrize("body,status,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input(shub, engine, body, status, text):
    before = listing(shub)
    r = svc(shub, "s-bob", "POST", f"/workspaces/{WS}/images", json=body)
    assert r.status_code == status and text in r.json()["detail"], r.text
    assert listing(shub) == before


def test_unknown_workspace_and_image(shub):
    assert svc(shub, "s-bob", "POST", "/workspaces/ghost/images", json={"server": "a", "name": "b"}).status_code == 404
    assert svc(shub, "s-alice", "POST", f"/workspaces/{WS}/images/saved-0000000000/publish").status_code == 404
    assert svc(shub, "s-alice", "DELETE", f"/workspaces/{WS}/images/saved-0000000000").status_code == 404


def test_failing_push_leaves_nothing(shub, engine, registry):
    """Last: the registry is stopped, the push fails, no local tag and no row remain."""
    assert spawn(shub, "s-bob", "late").status_code in (201, 202)
    before, tags = listing(shub), local_tags(engine, shub.prefix)
    registry.stop()
    try:
        r = svc(shub, "s-bob", "POST", f"/workspaces/{WS}/images", json={"server": "late", "name": "unpushed"})
        assert r.status_code == 502 and "push" in r.json()["detail"], r.text
        assert listing(shub) == before
        assert local_tags(engine, shub.prefix) == tags
        assert not [t for t in local_tags(engine, shub.prefix) if "unpushed" in t]
    finally:
        registry.start()
        shub.stop_server("s-bob", "late")
