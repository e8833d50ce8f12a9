"""Save a running instance as an image: a real hub, real containers, a real registry
(Debian's docker-registry on loopback, plain HTTP) and the image agent as a real process
the hub runs beside itself (a hub-managed service, announced in the hub's state folder), so saves push only the instance's own
layer. The roles rows "save own instance as an image" and "publish an image to the
workspace, delete workspace images", launching from a saved image, private vs published,
what a member installed as jovyan (a wheel built here, no index) surviving the round trip,
incremental saves, the workspace's layer cap, and a registry down that leaves nothing
behind and a retry that succeeds. The engine-commit path (no registry) is tested last."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import zipfile

import pytest
import requests
import yaml

from spawner_ext import snapshots
from spawner_ext.naming import container_name

from .conftest import cleanup_engine, make_catalog
from .hubproc import Hub, free_port

pytestmark = pytest.mark.integration

WS = "svision"
CAPPED = "scapped"  # a workspace whose saves may push at most 1 KiB
MEMBERS = {"im-alice": "owner", "im-adam": "admin", "im-bob": "developer", "im-olga": "ops",
           "im-lara": "labeler", "im-vic": "visitor"}
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
    cleanup_engine(engine, "im-")
    catalog = make_catalog(tmp, platform_admins=["im-root"], workspaces=[
        {"id": WS, "members": dict(MEMBERS), "resource_groups": ["cpu"]},
        {"id": CAPPED, "members": {"im-bob": "developer"}, "resource_groups": ["cpu"], "saved_layer_cap": "1Ki"},
    ])
    (tmp / "state").mkdir(exist_ok=True)
    h = Hub(tmp / "state", catalog, engine_url, extra_env={
        "DSW_SERVER_LIMIT": "0", "DSW_IMAGE_REGISTRY": f"{registry.host}/dsw", "DSW_IMAGE_REGISTRY_TLS_VERIFY": "0"})
    h.prefix = f"{registry.host}/dsw/"
    h.start()
    h.tokens = {u: h.user_token(u) for u in [*MEMBERS, "im-root"]}
    h.wait_service()
    announced = tmp / "state" / "image-agent.json"
    deadline = time.monotonic() + 30
    while not announced.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert announced.exists(), "the hub did not start the image agent (no image-agent.json in its state folder)"
    yield h
    h.stop()
    cleanup_engine(engine, "im-")
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
    return svc(h, "im-root", "GET", f"/workspaces/{WS}/images").json()


def wheel(name: str, version: str, value: str) -> bytes:
    """A minimal pure-Python wheel, built here so pip needs no index."""
    files = {f"{name}/__init__.py": f"VALUE = {value!r}\n",
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: dsw-test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n"}
    files[f"{name}-{version}.dist-info/RECORD"] = "".join(f"{n},,\n" for n in files) + \
        f"{name}-{version}.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return buf.getvalue()


def put_file(box, directory: str, name: str, data: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o644, 1000, 100
        tar.addfile(info, io.BytesIO(data))
    assert box.put_archive(directory, buf.getvalue())


def as_jovyan(box, script: str) -> str:
    res = box.exec_run(["sh", "-c", script], user="1000:100")
    assert res.exit_code == 0, res.output.decode()
    return res.output.decode()


DEMO_WHEEL = "dswdemo-1.0-py3-none-any.whl"
DELETED = "/opt/dsw/venv/bin/activate.csh"  # a file of the image that jovyan deletes


@pytest.fixture(scope="module")
def saved(shub, engine, registry):
    """im-bob (developer), as jovyan: pip-installs a wheel, writes under /opt, deletes a file
    of the image, writes into /tmp and home; then saves the instance through the agent."""
    assert spawn(shub, "im-bob", "src").status_code in (201, 202)
    box = engine.containers.get(container_name("im-bob", "src"))
    put_file(box, "/tmp", DEMO_WHEEL, wheel("dswdemo", "1.0", "from-the-wheel"))
    as_jovyan(box, f"pip install --no-index -q /tmp/{DEMO_WHEEL} && echo made-in-src > /opt/dsw/venv/marker "
                   f"&& rm {DELETED} && echo scratch > /tmp/marker && echo home > /home/jovyan/in-home")
    r = svc(shub, "im-bob", "POST", f"/workspaces/{WS}/images", json={"server": "src", "name": "with-marker"})
    assert r.status_code == 201, r.text
    img = r.json()
    # a second save of the same instance after one small change pushes only its own new layer
    as_jovyan(box, "echo second > /opt/dsw/venv/second")
    r = svc(shub, "im-bob", "POST", f"/workspaces/{WS}/images", json={"server": "src", "name": "second"})
    assert r.status_code == 201, r.text
    img["second"] = r.json()
    shub.stop_server("im-bob", "src")
    return img


def manifest(registry, repo: str, tag: str) -> dict:
    return requests.get(f"http://{registry.host}/v2/{repo}/manifests/{tag}", timeout=5, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"}).json()


def test_what_a_member_installed_survives_the_round_trip(shub, engine, registry, saved):
    assert saved["packages"] == {"added": {"dswdemo": "1.0"}, "changed": {}, "removed": {}}
    assert saved["layer_bytes"] > 0 and saved["uploaded"] <= saved["layer_bytes"] + 16384
    assert spawn(shub, "im-bob", "pkgs", image=saved["id"]).status_code in (201, 202)
    box = engine.containers.get(container_name("im-bob", "pkgs"))
    out = as_jovyan(box, "python -c 'import dswdemo; print(dswdemo.VALUE)'; cat /opt/dsw/venv/marker; "
                         f"test -e {DELETED} && echo deleted-file-back; test -e /tmp/marker && echo tmp-saved; "
                         "pip list --format=freeze | grep -i dswdemo")
    assert out.split() == ["from-the-wheel", "made-in-src", "dswdemo==1.0"], out
    shub.stop_server("im-bob", "pkgs")
    page = requests.get(f"{shub.url}/services/dsw/workspaces/{WS}", timeout=60, allow_redirects=False,
                        headers={"Authorization": f"token {shub.tokens['im-bob']}", "Accept": "text/html"})
    assert page.status_code == 200 and "+ dswdemo 1.0" in page.text
    assert "Not saved: home" in page.text or "not saved" in page.text


def test_a_second_save_pushes_only_its_own_layer(shub, registry, saved):
    second = saved["second"]
    base = manifest(registry, "dsw/base/notebook-cpu", "2026.11.1")
    base_bytes = sum(layer["size"] for layer in base["layers"])
    # bytes the client sent: the new layer and the config, never the base's hundreds of MB
    assert second["uploaded"] <= second["layer_bytes"] + 16384 < base_bytes / 100
    mine = manifest(registry, f"dsw/{WS}/im-bob/second", second["id"])
    assert mine["layers"][:-1] == base["layers"] and mine["layers"][-1]["size"] == second["layer_bytes"]


def test_the_workspace_cap_refuses_a_large_layer(shub, engine, registry):
    ok = shub.api("POST", "/users/im-bob/servers/capped", token=shub.tokens["im-bob"],
                  json={"workspace": CAPPED, "kind": "terminal"}, timeout=180)
    assert ok.status_code in (201, 202), ok.text
    if ok.status_code == 202:
        shub.wait_ready("im-bob", "capped")
    box = engine.containers.get(container_name("im-bob", "capped"))
    as_jovyan(box, "head -c 200000 /dev/urandom > /opt/dsw/venv/noise")
    r = svc(shub, "im-bob", "POST", f"/workspaces/{CAPPED}/images", json={"server": "capped", "name": "too-big"})
    assert r.status_code == 409 and "cap 1024 bytes" in r.json()["detail"], r.text
    assert svc(shub, "im-root", "GET", f"/workspaces/{CAPPED}/images").json() == []
    assert f"dsw/{CAPPED}/im-bob/too-big" not in registry.catalog()
    shub.stop_server("im-bob", "capped")


def test_save_push_and_launch_from_saved_image(shub, engine, registry, saved):
    assert saved["id"].startswith("saved-") and saved["owner"] == "im-bob" and not saved["published"]
    assert saved["pushed"] and saved["image"] == f"{shub.prefix}{WS}/im-bob/with-marker:{saved['id']}"
    assert f"dsw/{WS}/im-bob/with-marker" in registry.catalog()
    tags = requests.get(f"http://{registry.host}/v2/dsw/{WS}/im-bob/with-marker/tags/list", timeout=5).json()
    assert saved["id"] in tags["tags"]
    # the instance's credentials are not baked into the image
    env = engine.api.inspect_image(saved["image"])["Config"]["Env"]
    assert not [e for e in env if e.startswith("JUPYTERHUB_API_TOKEN=") and e != "JUPYTERHUB_API_TOKEN="]
    # a new instance from the saved image sees the file
    assert spawn(shub, "im-bob", "again", image=saved["id"]).status_code in (201, 202)
    box = engine.containers.get(container_name("im-bob", "again"))
    assert box.labels["dsw/image"] == saved["id"] and box.attrs["Config"]["Image"] == saved["image"]
    assert box.exec_run(["cat", "/opt/dsw/venv/marker"]).output.decode().strip() == "made-in-src"
    # deleting is refused while an instance runs from it, and changes nothing
    r = svc(shub, "im-alice", "DELETE", f"/workspaces/{WS}/images/{saved['id']}")
    assert r.status_code == 409 and container_name("im-bob", "again") in r.json()["detail"]
    assert saved["id"] in {i["id"] for i in listing(shub)}
    shub.stop_server("im-bob", "again")


def test_pages_list_saved_images(shub, saved):
    def page(user):
        return requests.get(f"{shub.url}/services/dsw/workspaces/{WS}", timeout=60, allow_redirects=False,
                            headers={"Authorization": f"token {shub.tokens[user]}", "Accept": "text/html"})
    owner, dev, ops_ = page("im-alice"), page("im-bob"), page("im-olga")
    assert owner.status_code == 200 and saved["id"] in owner.text and ">Publish</button>" in owner.text
    assert saved["id"] in dev.text and ">Publish</button>" not in dev.text  # the creator sees it, cannot publish
    assert saved["id"] not in ops_.text  # private: not another member's


def test_private_until_published(shub, engine, saved):
    # another builder of the workspace cannot see or launch the private image
    assert saved["id"] not in {i["id"] for i in svc(shub, "im-olga", "GET", f"/workspaces/{WS}/images").json()}
    r = shub.api("POST", "/users/im-olga/servers/other", token=shub.tokens["im-olga"],
                 json={**TERMINAL, "image": saved["id"]})
    assert r.status_code == 400 and saved["id"] in r.text
    assert not engine.containers.list(all=True, filters={"label": "dsw/user=im-olga"})
    # refused publishers change nothing
    for role in ("developer", "ops", "labeler", "visitor"):
        r = svc(shub, USER[role], "POST", f"/workspaces/{WS}/images/{saved['id']}/publish")
        assert r.status_code == 403, (role, r.text)
        r = svc(shub, USER[role], "DELETE", f"/workspaces/{WS}/images/{saved['id']}")
        assert r.status_code == 403, (role, r.text)
    row = next(i for i in listing(shub) if i["id"] == saved["id"])
    assert not row["published"] and saved["image"] in local_tags(engine, shub.prefix)
    # the owner publishes: every builder may launch it and sees it among the workspace's images
    r = svc(shub, "im-alice", "POST", f"/workspaces/{WS}/images/{saved['id']}/publish")
    assert r.status_code == 200 and r.json()["published"]
    overview = svc(shub, "im-olga", "GET", f"/workspaces/{WS}").json()
    assert {"id": saved["id"], "source": "custom"}.items() <= next(
        i for i in overview["images"] if i["id"] == saved["id"]).items()
    assert spawn(shub, "im-olga", "other", image=saved["id"]).status_code in (201, 202)
    box = engine.containers.get(container_name("im-olga", "other"))
    out = box.exec_run(["cat", "/opt/dsw/venv/marker"]).output.decode()
    assert out.strip() == "made-in-src"
    shub.stop_server("im-olga", "other")
    audit = svc(shub, "im-root", "GET", "/audit").json()
    assert any(a["action"] == "publish-image" and a["outcome"] == "ok" and a["actor"] == "im-alice" for a in audit)
    assert any(a["action"] == "publish-image" and a["outcome"] == "refused" and a["actor"] == "im-bob" for a in audit)


@pytest.mark.parametrize("role", ["owner", "admin", "ops"])
def test_builders_save_their_own_instances_and_managers_delete(shub, engine, registry, role):
    user = USER[role]
    assert spawn(shub, user, "mine").status_code in (201, 202)
    r = svc(shub, user, "POST", f"/workspaces/{WS}/images", json={"server": "mine", "name": f"{role}-img"})
    assert r.status_code == 201, r.text
    img = r.json()
    shub.stop_server(user, "mine")
    assert f"dsw/{WS}/{user}/{role}-img" in registry.catalog()
    # owners/admins delete: the row, the local tag and the registry's manifest go
    deleter = "im-adam" if role == "owner" else "im-alice"
    r = svc(shub, deleter, "DELETE", f"/workspaces/{WS}/images/{img['id']}")
    assert r.status_code == 200 and r.json()["registry"] == "ok", r.text
    assert img["id"] not in {i["id"] for i in listing(shub)}
    assert img["image"] not in local_tags(engine, shub.prefix)
    tags = requests.get(f"http://{registry.host}/v2/dsw/{WS}/{user}/{role}-img/tags/list", timeout=5).json()
    assert not tags.get("tags")


def test_labeler_and_visitor_cannot_save(shub, engine, saved):
    assert spawn(shub, "im-bob", "victim").status_code in (201, 202)
    before, tags = listing(shub), local_tags(engine, shub.prefix)
    for role in ("labeler", "visitor"):
        for body in ({"user": "im-bob", "server": "victim", "name": "stolen"}, {"server": "victim", "name": "stolen"}):
            r = svc(shub, USER[role], "POST", f"/workspaces/{WS}/images", json=body)
            assert r.status_code == 403, (role, r.text)
    # a builder cannot save somebody else's instance either
    r = svc(shub, "im-olga", "POST", f"/workspaces/{WS}/images", json={"user": "im-bob", "server": "victim", "name": "x"})
    assert r.status_code == 403 and "own instances" in r.json()["detail"]
    assert listing(shub) == before and local_tags(engine, shub.prefix) == tags
    audit = svc(shub, "im-root", "GET", "/audit").json()
    assert any(a["action"] == "save-image" and a["outcome"] == "refused" and a["actor"] == "im-lara" for a in audit)
    shub.stop_server("im-bob", "victim")


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
    r = svc(shub, "im-bob", "POST", f"/workspaces/{WS}/images", json=body)
    assert r.status_code == status and text in r.json()["detail"], r.text
    assert listing(shub) == before


def test_unknown_workspace_and_image(shub):
    assert svc(shub, "im-bob", "POST", "/workspaces/ghost/images", json={"server": "a", "name": "b"}).status_code == 404
    assert svc(shub, "im-alice", "POST", f"/workspaces/{WS}/images/saved-0000000000/publish").status_code == 404
    assert svc(shub, "im-alice", "DELETE", f"/workspaces/{WS}/images/saved-0000000000").status_code == 404


def test_failing_push_leaves_nothing_and_a_retry_succeeds(shub, engine, registry):
    """The registry is stopped: the save fails with the reason, no local tag, no row, no tag
    in the registry, the instance keeps serving; once the registry is back a retry works."""
    assert spawn(shub, "im-bob", "late").status_code in (201, 202)
    box = engine.containers.get(container_name("im-bob", "late"))
    as_jovyan(box, "echo kept > /opt/dsw/venv/late")
    before, tags = listing(shub), local_tags(engine, shub.prefix)
    registry.stop()
    try:
        r = svc(shub, "im-bob", "POST", f"/workspaces/{WS}/images", json={"server": "late", "name": "unpushed"})
        assert r.status_code == 502 and "push" in r.json()["detail"], r.text
        assert listing(shub) == before
        assert local_tags(engine, shub.prefix) == tags
        assert not [t for t in local_tags(engine, shub.prefix) if "unpushed" in t]
    finally:
        registry.start()
    assert f"dsw/{WS}/im-bob/unpushed" not in registry.catalog()
    server = shub.api("GET", "/users/im-bob", token=shub.tokens["im-bob"]).json()["servers"]["late"]
    assert server["ready"] and as_jovyan(box, "cat /opt/dsw/venv/late").strip() == "kept"
    r = svc(shub, "im-bob", "POST", f"/workspaces/{WS}/images", json={"server": "late", "name": "unpushed"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] in requests.get(f"http://{registry.host}/v2/dsw/{WS}/im-bob/unpushed/tags/list",
                                          timeout=5).json()["tags"]
    shub.stop_server("im-bob", "late")


def test_engine_commit_without_a_registry_records_packages(shub, engine, engine_url, saved):
    """No registry (local prefix): the engine commits the container, nothing is pushed, and the
    package difference is read inside the instance with pip list."""
    assert spawn(shub, "im-bob", "local").status_code in (201, 202)
    box = engine.containers.get(container_name("im-bob", "local"))
    put_file(box, "/tmp", DEMO_WHEEL, wheel("dswdemo", "1.0", "local"))
    as_jovyan(box, f"pip install --no-index -q /tmp/{DEMO_WHEEL}")
    cli = snapshots.client(engine_url)
    try:
        done = snapshots.save(cli, ws=WS, user="im-bob", server="local", name="local-only", tag="saved-local0000",
                              prefix="localhost/dsw-imtest")
        assert not done.pushed and done.packages == {"added": {"dswdemo": "1.0"}, "changed": {}, "removed": {}}
        assert done.layer_bytes == 0 and done.ref in local_tags(engine, "localhost/dsw-imtest/")
    finally:
        remove_saved_images(engine, "localhost/dsw-imtest/")
        cli.close()
    shub.stop_server("im-bob", "local")
