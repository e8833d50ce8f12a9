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
