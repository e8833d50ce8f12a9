"""Storage entries in the catalogue and the ``mounts`` spawn option (pure; no I/O but the file)."""

import copy
import json

import pytest

from spawner_ext.catalog import CatalogError, load_catalog
from spawner_ext.options import OptionsError, resolve
from spawner_ext.spec import Mount, OssCredentials
from tests.conftest import BASE_CATALOG

STORAGE = [
    {"id": "team-nas", "display_name": "Team NAS", "workspaces": ["vision"], "mount_path": "/mnt/nas",
     "access": "rw",
     "nas": {"nfs": {"server": "nas.example.com", "path": "/exports/vision"}, "host_path": "/srv/nas/vision",
             "sub_path_template": "{workspace}/{user}"}},
    {"id": "datasets", "workspaces": ["*"], "mount_path": "/mnt/datasets", "access": "ro",
     "oss": {"endpoint": "https://oss.example.com", "bucket": "datasets", "prefix": "/shared/", "region": "eu-1",
             "credentials": {"secret": "oss-datasets", "file": "/etc/dsw/oss-datasets", "env": "DSW_OSS_DATASETS"}}},
    {"id": "scratch", "workspaces": ["vision"], "mount_path": "/mnt/scratch", "access": "rw",
     "oss": {"endpoint": "http://127.0.0.1:9000", "bucket": "scratch", "credentials": {"env": "SCRATCH"}}},
    {"id": "archive", "workspaces": ["nlp"], "mount_path": "/mnt/archive",
     "nas": {"host_path": "/srv/archive"}},
]


def with_storage(storage=None, **extra):
    data = copy.deepcopy(BASE_CATALOG)
    data["storage"] = copy.deepcopy(STORAGE if storage is None else storage)
    data.update(extra)
    return data


@pytest.fixture
def catalog(write_catalog):
    return load_catalog(write_catalog(with_storage()))


def test_entries_load_and_are_offered_per_workspace(catalog):
    assert [s.id for s in catalog.storage_for("vision")] == ["team-nas", "datasets", "scratch"]
    assert [s.id for s in catalog.storage_for("nlp")] == ["datasets", "archive"]
    assert catalog.storage_entry("datasets").oss.prefix == "shared"  # slashes trimmed
    assert catalog.storage_entry("team-nas").type == "nas" and not catalog.storage_entry("team-nas").read_only


BAD_ENTRIES = [
    ({"mount_path": "/etc/data"}, "storage[0].mount_path", "system folder /etc"),
    ({"mount_path": "data"}, "storage[0].mount_path", "absolute"),
    ({"mount_path": "/home/jovyan/x"}, "storage[0].mount_path", "home folder"),
    ({"access": "rwx"}, "storage[0].access", "'ro' or 'rw'"),
    ({"workspaces": []}, "storage[0].workspaces", "at least 1"),
    ({"workspaces": ["ghost"]}, "storage[0].workspaces[0]", "unknown workspace 'ghost'"),
    ({"oss": {"endpoint": "https://x", "bucket": "bkt", "credentials": {"env": "X"}}}, "storage[0]", "either nas or oss"),
    ({"nas": {}}, "storage[0].nas", "needs nfs (Kubernetes) or host_path"),
    ({"nas": {"host_path": "srv/x"}}, "storage[0].nas.host_path", "absolute"),
    ({"nas": {"nfs": {"server": "nas", "path": "/e/../x"}}}, "storage[0].nas.nfs.path", "normalised"),
    ({"nas": {"nfs": {"server": "bad host", "path": "/e"}}}, "storage[0].nas.nfs.server", "pattern"),
    ({"nas": {"host_path": "/srv", "sub_path_template": "{uid}"}}, "storage[0].nas.sub_path_template", "{uid}"),
    ({"id": "Bad_Id"}, "storage[0].id", "pattern"),
]


@pytest.mark.parametrize("change,path,text", BAD_ENTRIES)
def test_bad_entries_name_the_path(write_catalog, change, path, text):
    storage = copy.deepcopy(STORAGE[:1])
    storage[0].update(change)
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(with_storage(storage)))
    assert any(p == path and text in m for _, p, m in err.value.problems), err.value.problems


OSS_BAD = [
    ({"endpoint": "oss.example.com"}, "storage[0].oss.endpoint"),
    ({"endpoint": "https://AK:SK@oss.example.com"}, "storage[0].oss.endpoint"),
    ({"bucket": "B"}, "storage[0].oss.bucket"),
    ({"prefix": "a/../b"}, "storage[0].oss.prefix"),
    ({"credentials": {}}, "storage[0].oss.credentials"),
    ({"credentials": {"access_key": "AKIA", "secret_key": "x"}}, "storage[0].oss.credentials"),
    ({"credentials": {"env": "lower"}}, "storage[0].oss.credentials.env"),
    ({"credentials": {"secret": "Not_DNS"}}, "storage[0].oss.credentials.secret"),
    ({"credentials": {"file": "relative/file"}}, "storage[0].oss.credentials.file"),
]


@pytest.mark.parametrize("change,path", OSS_BAD)
def test_bad_oss_entries(write_catalog, change, path):
    storage = copy.deepcopy(STORAGE[1:2])
    storage[0]["oss"].update(change)
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(with_storage(storage)))
    assert any(p == path for _, p, _ in err.value.problems), err.value.problems


def test_keys_in_the_catalogue_are_refused_without_echoing_them(write_catalog):
    storage = copy.deepcopy(STORAGE[1:2])
    storage[0]["oss"]["credentials"] = {"secret_access_key": "TOP-SECRET-VALUE"}
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(with_storage(storage)))
    assert "never go in the catalogue" in str(err.value) and "TOP-SECRET-VALUE" not in str(err.value)


def test_duplicate_ids_and_overlapping_defaults(write_catalog):
    storage = copy.deepcopy(STORAGE)
    storage[2]["id"] = "team-nas"
    storage[3]["mount_path"] = "/mnt/datasets/archive"  # nlp sees datasets and archive
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(with_storage(storage)))
    problems = {p: m for _, p, m in err.value.problems}
    assert "duplicate id 'team-nas'" in problems["storage[2].id"]
    assert "overlaps '/mnt/datasets' of storage 'datasets'" in problems["storage[3].mount_path"]


# --- the mounts option -----------------------------------------------------------------
def test_no_mounts_by_default(catalog):
    assert resolve(catalog, "alice", "s1", {}).mounts == ()


def test_defaults_of_each_entry(catalog):
    spec = resolve(catalog, "alice", "s1", {"mounts": [{"storage": "team-nas"}, {"storage": "datasets"}]})
    nas, oss = spec.mounts
    assert nas == Mount(type="nfs", source="nas.example.com:/exports/vision/vision/alice", mount_path="/mnt/nas",
                        read_only=False, name="storage-team-nas", storage="team-nas",
                        host_source="/srv/nas/vision/vision/alice", host_root="/srv/nas/vision")
    assert oss == Mount(type="oss", source="datasets/shared", mount_path="/mnt/datasets", read_only=True,
                        name="storage-datasets", storage="datasets", endpoint="https://oss.example.com",
                        region="eu-1", credentials=OssCredentials(secret="oss-datasets", file="/etc/dsw/oss-datasets",
                                                                  env="DSW_OSS_DATASETS"))
    assert spec.all_mounts[0].name == "home" and spec.all_mounts[1:] == spec.mounts
    assert oss.url == "oss://datasets/shared"


def test_host_only_nas_is_a_host_mount(catalog):
    spec = resolve(catalog, "bob", "", {"workspace": "nlp", "mounts": ["archive"]})
    assert spec.mounts[0].type == "host" and spec.mounts[0].source == "/srv/archive"
    assert spec.mounts[0].read_only  # access defaults to ro


def test_move_and_narrow(catalog):
    spec = resolve(catalog, "alice", "s1", {"mounts": [
        {"storage": "team-nas", "mount_path": "/data/team", "read_only": True},
        {"storage": "scratch", "read_only": False}]})
    assert [(m.mount_path, m.read_only) for m in spec.mounts] == [("/data/team", True), ("/mnt/scratch", False)]


def test_form_sends_json_text(catalog):
    text = json.dumps([{"storage": "scratch", "mount_path": "/mnt/s", "read_only": "on"}])
    spec = resolve(catalog, "alice", "s1", {"mounts": [text]})
    assert spec.mounts[0].mount_path == "/mnt/s" and spec.mounts[0].read_only
    assert resolve(catalog, "alice", "s1", {"mounts": ""}).mounts == ()
    assert resolve(catalog, "alice", "s1", {"mounts": "[]"}).mounts == ()


REFUSED = [
    ({"mounts": {"storage": "datasets"}}, "mounts", "must be a list"),
    ({"mounts": "not json"}, "mounts", "JSON"),
    ({"mounts": [5]}, "mounts[0]", "must be an object"),
    ({"mounts": [{"storage": "ghost"}]}, "mounts[0].storage", "workspace 'vision' has no storage 'ghost'"),
    ({"mounts": [{"storage": "archive"}]}, "mounts[0].storage", "has no storage 'archive'"),  # nlp's
    ({"mounts": [{}]}, "mounts[0].storage", "names a storage entry"),
    ({"mounts": [{"storage": "datasets", "size": 1}]}, "mounts[0].size", "unknown key"),
    ({"mounts": ["datasets", "datasets"]}, "mounts[1].storage", "mounted twice"),
    ({"mounts": [{"storage": "datasets", "read_only": False}]}, "mounts[0].read_only", "never widen"),
    ({"mounts": [{"storage": "datasets", "read_only": "maybe"}]}, "mounts[0].read_only", "true or false"),
    ({"mounts": [{"storage": "datasets", "mount_path": "/etc"}]}, "mounts[0].mount_path",
     "storage 'datasets': mount path '/etc' is inside the system folder /etc"),
    ({"mounts": [{"storage": "datasets", "mount_path": "/home/jovyan/data"}]}, "mounts[0].mount_path",
     "overlaps the home folder"),
    ({"mounts": [{"storage": "datasets", "mount_path": "/mnt/../x"}]}, "mounts[0].mount_path", "'..'"),
    ({"mounts": [{"storage": "datasets", "mount_path": "/"}]}, "mounts[0].mount_path", "must not be '/'"),
    ({"mounts": ["team-nas", {"storage": "datasets", "mount_path": "/mnt/nas/sub"}]}, "mounts[1].mount_path",
     "overlaps '/mnt/nas' of storage 'team-nas'"),
    ({"mounts": [{"storage": "datasets", "mount_path": "/mnt"}, "team-nas"]}, "mounts[1].mount_path",
     "storage 'team-nas': mount path '/mnt/nas' overlaps '/mnt'"),
]


@pytest.mark.parametrize("options,field,text", REFUSED)
def test_refusals_name_the_mount_and_reason(catalog, options, field, text):
    with pytest.raises(OptionsError) as err:
        resolve(catalog, "alice", "s1", options)
    assert err.value.status == 400 and err.value.field == field and text in err.value.message, err.value


def test_catalogue_without_storage_refuses_mounts(write_catalog):
    catalog = load_catalog(write_catalog(BASE_CATALOG))
    with pytest.raises(OptionsError) as err:
        resolve(catalog, "alice", "", {"mounts": ["datasets"]})
    assert "offered: none" in err.value.message


def test_readme_storage_example_loads(write_catalog):
    """The README's Storage section is a working catalogue fragment."""
    import re
    from pathlib import Path

    import yaml
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Storage"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    data = copy.deepcopy(BASE_CATALOG)
    data.update(yaml.safe_load(block))
    cat = load_catalog(write_catalog(data))
    assert {s.type for s in cat.storage} == {"nas", "oss"}


def test_spawn_form_lists_storage_per_workspace(catalog):
    import jinja2

    from spawner_ext.catalog.models import Kind
    env = jinja2.Environment(loader=jinja2.PackageLoader("spawner_ext", "templates"), autoescape=True)
    workspaces = [{"ws": catalog.workspace(w), "role": "owner", "images": catalog.images_for(w), "groups": [],
                   "storage": catalog.storage_for(w), "idle_max": 1440, "idle_default": 0}
                  for w in ("nlp", "vision")]
    html = env.get_template("spawn_form.html").render(workspaces=workspaces, kinds=list(Kind), user="alice",
                                                      script_max=16384, stop_max_hours=168)
    assert '<input type="hidden" name="mounts" id="dsw-mounts"' in html
    assert html.count('data-ws="vision" data-storage=') == 3 and html.count('data-ws="nlp" data-storage=') == 2
    row = html[html.index('data-ws="vision" data-storage="datasets"'):]
    row = row[:row.index("</tr>")]
    assert 'value="/mnt/datasets"' in row and "checked disabled" in row  # read-only entries cannot widen
    assert "oss-datasets" not in html and "DSW_OSS_DATASETS" not in html and "/etc/dsw" not in html
