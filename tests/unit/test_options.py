"""user_options -> InstanceSpec: allowed and refused cases, table-driven."""

import pytest

from spawner_ext.catalog import load_catalog
from spawner_ext.naming import home_volume_name
from spawner_ext.options import OptionsError, resolve
from tests.conftest import BASE_CATALOG


@pytest.fixture
def catalog(write_catalog):
    return load_catalog(write_catalog(BASE_CATALOG))


ALLOWED = [
    # user, options, expected attributes
    ("alice", {}, {"workspace": "vision", "kind": "notebook", "image_id": "nb-cpu", "start_url": "/lab",
                   "resource_group": "public-cpu", "instance_type": "cpu-small", "cpu": 1.0, "gpu": 0}),
    ("alice", {"kind": "vscode"}, {"kind": "vscode", "start_url": "/vscode/"}),
    ("alice", {"kind": "terminal"}, {"kind": "terminal", "start_url": "/lab/workspaces/dsw-terminal"}),
    ("bob", {"workspace": "nlp", "instance_type": "cpu-half"}, {"workspace": "nlp", "cpu": 0.5, "memory": 512 * 2**20}),
    ("olga", {"image": "nb-gpu", "resource_group": "gpu-a10"},
     {"image_id": "nb-gpu", "instance_type": "gpu-1", "gpu": 1, "gpu_type": "nvidia-a10",
      "node_selector": {"dsw/pool": "gpu-a10"}, "priority_class": "dsw-gpu"}),
    ("adam", {"image_ref": "registry.example.com/vision/custom:1"}, {"image": "registry.example.com/vision/custom:1"}),
    ("alice", {"workspace": ["vision"], "kind": ["notebook"]}, {"workspace": "vision"}),  # form lists
]


@pytest.mark.parametrize("user,options,expected", ALLOWED)
def test_allowed(catalog, user, options, expected):
    spec = resolve(catalog, user, "s1", options)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key


REFUSED = [
    ("vic", {}, 403, "workspace", "visitor"),
    ("lara", {}, 403, "workspace", "labeler"),
    ("stranger", {}, 403, "workspace", "not a member of any workspace"),
    ("nina", {"workspace": "vision"}, 403, "workspace", "not a member of workspace 'vision'"),
    ("alice", {"workspace": "ghost"}, 400, "workspace", "unknown workspace 'ghost'"),
    ("bob", {}, 400, "workspace", "choose one of: nlp, vision"),
    ("alice", {"image": "lab-only"}, 400, "image", "has no image 'lab-only'"),
    ("alice", {"image": "nope"}, 400, "image", "has no image 'nope'"),
    ("bob", {"workspace": "nlp", "image": "lab-only", "kind": "vscode"}, 400, "kind", "does not support vscode"),
    ("alice", {"kind": "emacs"}, 400, "kind", "unknown kind 'emacs'"),
    ("alice", {"image": "nb-gpu"}, 400, "instance_type", "needs a GPU but 'cpu-small' has none"),
    ("alice", {"image": "nb-gpu", "resource_group": "gpu-a10", "instance_type": "cpu-small"}, 400,
     "instance_type", "needs a GPU"),
    ("alice", {"instance_type": "gpu-1"}, 400, "instance_type", "cannot run in resource group 'public-cpu'"),
    ("alice", {"instance_type": "huge"}, 400, "instance_type", "unknown instance type 'huge'"),
    ("nina", {"resource_group": "gpu-a10"}, 400, "resource_group", "has no resource group 'gpu-a10'"),
    ("alice", {"colour": "red"}, 400, "colour", "unknown option"),
    ("alice", {"image": 5}, 400, "image", "must be a string"),
    ("bob", {"workspace": "vision", "image_ref": "registry.example.com/vision/x:1"}, 403, "image_ref", "role developer"),
    ("adam", {"image_ref": "docker.io/evil/x:1"}, 403, "image_ref", "not on workspace 'vision'"),
    ("adam", {"image_ref": "registry.example.com/visionary/x:1"}, 403, "image_ref", "allowlist"),
    ("adam", {"image_ref": "registry.example.com/vision/x:1", "image": "nb-cpu"}, 400, "image_ref", "not both"),
]


@pytest.mark.parametrize("user,options,status,field,text", REFUSED, ids=[f"{r[0]}-{r[3]}-{i}" for i, r in enumerate(REFUSED)])
def test_refused(catalog, user, options, status, field, text):
    with pytest.raises(OptionsError) as info:
        resolve(catalog, user, "s1", options)
    assert (info.value.status, info.value.field) == (status, field)
    assert text in info.value.message


def test_options_must_be_object(catalog):
    with pytest.raises(OptionsError, match="JSON object"):
        resolve(catalog, "alice", "", ["image"])


def test_spec_labels_env_and_home(catalog):
    spec = resolve(catalog, "alice", "", {"kind": "vscode"})
    assert spec.labels["dsw/user"] == "alice" and spec.labels["dsw/server"] == "h_default"
    assert spec.labels["dsw/workspace"] == "vision" and spec.labels["dsw/kind"] == "vscode"
    assert spec.env["DSW_WORKSPACE"] == "vision"
    assert spec.home.source == home_volume_name("vision", "alice") == "dsw-home-vision.alice"
    assert spec.home.mount_path == "/home/jovyan"
    with pytest.raises(Exception):
        spec.image = "other"  # frozen


def test_home_volume_is_per_workspace_and_user(catalog):
    a = resolve(catalog, "bob", "", {"workspace": "vision"}).home.source
    b = resolve(catalog, "bob", "", {"workspace": "nlp"}).home.source
    assert a != b


def test_unsafe_names_stay_distinct():
    assert home_volume_name("vision", "a.b") != home_volume_name("vision", "a-b")
