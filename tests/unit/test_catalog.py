"""Catalogue loading: every validation rule has a case, and errors name file and path."""

import copy

import pytest

from spawner_ext.catalog import CatalogError, load_catalog
from tests.conftest import BASE_CATALOG


def mutate(fn):
    data = copy.deepcopy(BASE_CATALOG)
    fn(data)
    return data


def test_valid_catalog_loads(write_catalog):
    cat = load_catalog(write_catalog(BASE_CATALOG))
    assert cat.memberships("bob") == {"vision": "developer", "nlp": "admin"}
    assert cat.instance_type("cpu-half").cpu == 0.5
    assert cat.instance_type("cpu-half").memory == 512 * 2**20
    assert [i.id for i in cat.images_for("nlp")] == ["nb-cpu", "lab-only"]
    assert [t.id for t in cat.types_for_group(cat.resource_group("gpu-a10"))] == ["cpu-small", "cpu-half", "gpu-1"]


BAD = [
    ("unknown top-level key", lambda d: d.update(colour="red"), "colour", "Extra inputs are not permitted"),
    ("bad role", lambda d: d["workspaces"][0]["members"].update(zed="superuser"),
     "workspaces[0].members.zed", "'owner'"),
    ("two owners", lambda d: d["workspaces"][0]["members"].update(bob="owner"),
     "workspaces[0].members", "one owner"),
    ("bad member name", lambda d: d["workspaces"][0]["members"].update({"Bad Name": "developer"}),
     "workspaces[0].members", "member name"),
    ("bad workspace id", lambda d: d["workspaces"][0].update(id="Vision!"), "workspaces[0].id", "pattern"),
    ("duplicate workspace", lambda d: d["workspaces"].append(copy.deepcopy(d["workspaces"][0])),
     "workspaces[2].id", "duplicate id 'vision'"),
    ("unknown group in workspace", lambda d: d["workspaces"][1]["resource_groups"].append("nope"),
     "workspaces[1].resource_groups[1]", "unknown resource group 'nope'"),
    ("bad cpu quantity", lambda d: d["instance_types"][0].update(cpu="4 cores"),
     "instance_types[0].cpu", "not a quantity"),
    ("negative cpu", lambda d: d["instance_types"][0].update(cpu=-1), "instance_types[0].cpu", "negative"),
    ("zero memory", lambda d: d["instance_types"][0].update(memory=0), "instance_types[0].memory", "greater than zero"),
    ("milli memory", lambda d: d["instance_types"][0].update(memory="500m"), "instance_types[0].memory", "milli"),
    ("gpu without type", lambda d: d["instance_types"][2].pop("gpu_type"), "instance_types[2].gpu_type", "needs a gpu_type"),
    ("gpu type without gpu", lambda d: d["instance_types"][0].update(gpu_type="a10"), "instance_types[0].gpu_type", "gpu is 0"),
    ("negative gpu", lambda d: d["instance_types"][0].update(gpu=-1), "instance_types[0].gpu", "greater than or equal"),
    ("image missing ref", lambda d: d["images"][0].pop("image"), "images[0].image", "Field required"),
    ("image ref with space", lambda d: d["images"][0].update(image="a b"), "images[0].image", "not an image reference"),
    ("image unknown workspace", lambda d: d["images"][1].update(workspaces=["ghost"]),
     "images[1].workspaces[0]", "unknown workspace 'ghost'"),
    ("image bad kind", lambda d: d["images"][0].update(kinds=["emacs"]), "images[0].kinds[0]", "'notebook'"),
    ("image bad accelerator", lambda d: d["images"][0].update(accelerator="tpu"), "images[0].accelerator", "'cpu'"),
    ("group bad kind", lambda d: d["resource_groups"][0].update(kind="shared"), "resource_groups[0].kind", "'public'"),
    ("group no capacity", lambda d: d["resource_groups"][0].pop("capacity"), "resource_groups[0].capacity", "Field required"),
    ("group unknown type", lambda d: d["resource_groups"][0]["instance_types"].append("huge"),
     "resource_groups[0].instance_types[2]", "unknown instance type 'huge'"),
    ("group type needs gpus", lambda d: d["resource_groups"][0]["instance_types"].append("gpu-1"),
     "resource_groups[0].instance_types[2]", "needs 1 GPU(s) but the group has 0"),
    ("bad toleration", lambda d: d["resource_groups"][1]["tolerations"][0].update(effect="Sometimes"),
     "resource_groups[1].tolerations[0].effect", "NoSchedule"),
]


@pytest.mark.parametrize("case,change,path,text", BAD, ids=[b[0] for b in BAD])
def test_invalid_catalog_names_file_path_and_cause(write_catalog, case, change, path, text):
    file = write_catalog(mutate(change))
    with pytest.raises(CatalogError) as info:
        load_catalog(file)
    problems = info.value.problems
    assert any(f == str(file) and p == path and text in m for f, p, m in problems), problems
    assert str(file) in str(info.value) and path in str(info.value)


def test_yaml_syntax_error_gives_line(write_catalog):
    file = write_catalog("workspaces:\n  - id: a\n   bad: [\n")
    with pytest.raises(CatalogError, match=r"line \d+, column \d+: not valid YAML"):
        load_catalog(file)


def test_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.yaml")


def test_not_a_mapping(write_catalog):
    with pytest.raises(CatalogError, match="mapping of sections"):
        load_catalog(write_catalog("- a\n- b\n"))


def test_image_metadata_merged_and_overridden(write_catalog, tmp_path):
    (tmp_path / "images.yaml").write_text(
        "images:\n"
        "  - {id: managed-cpu, image: localhost/dsw/notebook-cpu:1, accelerator: cpu}\n"
        "  - {id: managed-gpu, image: localhost/dsw/notebook-gpu:1, accelerator: gpu}\n")
    data = mutate(lambda d: d.update(image_metadata="images.yaml"))
    data["images"].append({"id": "managed-gpu", "workspaces": ["vision"]})
    cat = load_catalog(write_catalog(data))
    assert cat.image("managed-cpu").visible_in("nlp")
    assert cat.image("managed-gpu").image == "localhost/dsw/notebook-gpu:1"
    assert not cat.image("managed-gpu").visible_in("nlp")


def test_bad_image_metadata_names_metadata_file(write_catalog, tmp_path):
    (tmp_path / "images.yaml").write_text("images:\n  - {id: x, image: 'a b'}\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(write_catalog(mutate(lambda d: d.update(image_metadata="images.yaml"))))
    assert info.value.problems[0][0].endswith("images.yaml")
    assert info.value.problems[0][1] == "images[0].image"


def test_repository_example_catalog_is_valid():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    cat = load_catalog(root / "hub_config" / "catalog.yaml")
    assert cat.workspace("vision").members["alice"] == "owner"
    assert cat.image("notebook-cpu") is not None


# --- hub group and role names (issue 9, finding 7) ----------------------------------------
def test_workspace_vision_admin_cannot_make_its_members_vision_admins(write_catalog):
    """A workspace called "vision-admin" used to write group ws-vision-admin: vision's admin
    role group, so its visitors became vision admins. Names now use a separator workspace
    ids cannot hold."""
    from spawner_ext import rbac

    data = mutate(lambda d: d["workspaces"].append({"id": "vision-admin", "members": {"mallory": "visitor"}}))
    cat = load_catalog(write_catalog(data))
    groups = rbac.groups(cat)
    assert "mallory" not in groups[rbac.ws_role_group("vision", "admin")]
    roles = rbac.roles(cat)
    vision_admin = next(r for r in roles if r["name"] == rbac.ws_role_name("vision", "admin"))
    assert all("mallory" not in groups[g] for g in vision_admin["groups"])
    names = [r["name"] for r in roles]
    assert len(names) == len(set(names))


def test_workspace_called_platform_keeps_the_hub_configurable(write_catalog):
    """Workspace "platform" used to define role dsw-platform-admin a second time (JupyterHub
    refuses to start then); now every workspace role name is distinct from the fixed ones
    and valid for JupyterHub."""
    from jupyterhub.roles import _validate_role_name

    from spawner_ext import rbac

    data = mutate(lambda d: d["workspaces"].append({"id": "platform", "members": {"mallory": "admin"}}))
    cat = load_catalog(write_catalog(data))
    roles = rbac.roles(cat)
    names = [r["name"] for r in roles]
    assert len(names) == len(set(names))
    for name in names:
        _validate_role_name(name)  # raises on a name JupyterHub would refuse
    platform = next(r for r in roles if r["name"] == "dsw-platform-admin")
    assert "mallory" not in platform["users"]


def test_loader_refuses_ids_whose_hub_names_collide(write_catalog, monkeypatch):
    """The loader checks the names rbac derives: were they ambiguous (the old '-' scheme),
    the catalogue is refused naming the workspace, instead of merging two workspaces' roles."""
    from spawner_ext import rbac

    monkeypatch.setattr(rbac, "ws_role_group", lambda ws, role: f"ws-{ws}-{role}")
    monkeypatch.setattr(rbac, "ws_group", lambda ws: f"ws-{ws}")
    data = mutate(lambda d: d["workspaces"].append({"id": "vision-admin", "members": {"mallory": "visitor"}}))
    with pytest.raises(CatalogError) as exc:
        load_catalog(write_catalog(data))
    assert any(p == "workspaces[2].id" and "group ws-vision-admin" in m and "'vision'" in m
               for _, p, m in exc.value.problems), exc.value.problems


def test_a_trailing_newline_never_passes_a_name_or_path_check():
    """Python's ``$`` also matches before a final newline: every validator matches the whole
    text, so 'bob\\n' is not a member name and 'dsw-x\\n' not a DNS name (a name built to
    look like another one)."""
    import pytest

    from spawner_ext.catalog.models import Workspace
    from spawner_ext.naming import dns_subdomain_problem
    from spawner_ext.storage.paths import mount_path_problem

    assert dns_subdomain_problem("dsw-x\n") and mount_path_problem("/mnt/data\n")
    with pytest.raises(ValueError):
        Workspace.model_validate({"id": "w", "members": {"bob\n": "developer"}, "resource_groups": []})
