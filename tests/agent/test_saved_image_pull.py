"""A saved image launched on Kubernetes pulls from the saved-image registry with the workspace's
pull secret (catalogue ``workspaces[].image_pull_secret``): the saved image is a row of the real
state database, turned into a catalogue image by the effective catalogue, resolved as the
spawner resolves spawn options, and built into the pod fields kubespawner receives."""

from __future__ import annotations

import copy

import pytest

from spawner_ext.catalog.db import SavedImage, sessions
from spawner_ext.catalog.live import effective_catalog
from spawner_ext.catalog.models import Catalog
from spawner_ext.kube import objects
from spawner_ext.options import resolve
from tests.conftest import BASE_CATALOG

OPTIONS = {"workspace": "vision", "kind": "notebook", "resource_group": "public-cpu", "instance_type": "cpu-half"}


def catalog_with(secret: str | None) -> Catalog:
    data = copy.deepcopy(BASE_CATALOG)
    if secret is not None:
        data["workspaces"][0]["image_pull_secret"] = secret  # vision
    return Catalog.model_validate(data)


@pytest.fixture
def session(tmp_path):
    with sessions(f"sqlite:///{tmp_path}/state.sqlite")() as s:
        s.add(SavedImage(id="saved-0a1b", workspace="vision", owner="alice", name="mine",
                         image="registry.example.com:5000/dsw-saved/vision/alice-mine:saved-0a1b",
                         base_image="nb-cpu", published=True))
        s.add(SavedImage(id="saved-9f8e", workspace="nlp", owner="alice", name="other",
                         image="registry.example.com:5000/dsw-saved/nlp/alice-other:saved-9f8e",
                         base_image="nb-cpu", published=True))
        s.commit()
        yield s


def test_saved_image_pulls_with_the_workspaces_secret(session):
    catalog = effective_catalog(catalog_with("vision-saved-pull"), session, "bob")
    spec = resolve(catalog, "bob", "", {**OPTIONS, "image": "saved-0a1b"})
    assert spec.pull_secret == "vision-saved-pull"
    fields = objects.pod_fields(spec, objects.KubeSettings())
    assert fields.image == "registry.example.com:5000/dsw-saved/vision/alice-mine:saved-0a1b"
    assert fields.image_pull_secrets == [{"name": "vision-saved-pull"}]
    # the catalogue's own images keep their own pull secret (none for nb-cpu)
    base = resolve(catalog, "bob", "", {**OPTIONS, "image": "nb-cpu"})
    assert objects.pod_fields(base, objects.KubeSettings()).image_pull_secrets == []


def test_another_workspaces_saved_image_uses_its_own_secret(session):
    """nlp names no secret: its saved image pulls without vision's credentials."""
    catalog = effective_catalog(catalog_with("vision-saved-pull"), session, "alice")
    (nlp_image,) = [i for i in catalog.images if i.id == "saved-9f8e"]
    assert nlp_image.pull_secret is None


def test_no_secret_named_no_pull_secret(session):
    catalog = effective_catalog(catalog_with(None), session, "bob")
    spec = resolve(catalog, "bob", "", {**OPTIONS, "image": "saved-0a1b"})
    assert objects.pod_fields(spec, objects.KubeSettings()).image_pull_secrets == []


@pytest.mark.parametrize("bad", ["Vision_Pull", "-x", "a b", ""])
def test_bad_secret_name_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="image_pull_secret"):
        catalog_with(bad)
