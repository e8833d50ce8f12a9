"""Issue 9, findings 4, 6, 10 and 12, on the rules themselves (the spawn requests that send the
same attacks through a real hub are in test_instances_hostile.py):

  4  mount paths that the kernel reads as system folders (``//etc``) are refused;
  6  every derived name is injective over (workspace, user, server);
  10 a NAS host folder reached through a symlink is refused;
  12 s3fs folders are 0700 and owned by the instance uid.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import string
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawner_ext import naming
from spawner_ext.catalog import load_catalog
from spawner_ext.options import OptionsError, resolve
from spawner_ext.spec import Mount
from spawner_ext.storage import local
from spawner_ext.storage.paths import HOME, SYSTEM_FOLDERS, mount_path_problem, normal_form
from tests.conftest import BASE_CATALOG

# --- finding 4: mount paths ---------------------------------------------------------------

KERNEL_SPELLINGS = ["//etc", "//usr", "//home/jovyan", "//etc/cron.d", "///etc", "/a/./b", "/a/../etc",
                    "/mnt/data/", "/mnt//data", "/./etc", "//mnt/data"]


@pytest.mark.parametrize("path", KERNEL_SPELLINGS)
def test_other_spellings_of_a_path_are_refused(path):
    assert mount_path_problem(path) is not None


def test_the_finding_paths_name_the_normal_form():
    assert "must be normalised (write '/etc')" in mount_path_problem("//etc")
    assert "must be normalised (write '/home/jovyan')" in mount_path_problem("//home/jovyan")


def test_the_spawn_option_refusal_names_the_field_and_400(write_catalog):
    data = dict(BASE_CATALOG, storage=[{"id": "nas", "workspaces": ["vision"], "mount_path": "/mnt/nas",
                                        "access": "rw", "nas": {"host_path": "/srv/nas"}}])
    catalog = load_catalog(write_catalog(data))
    with pytest.raises(OptionsError) as err:
        resolve(catalog, "alice", "x", {"workspace": "vision", "mounts": [{"storage": "nas", "mount_path": "//etc"}]})
    assert (err.value.status, err.value.field) == (400, "mounts[0].mount_path")
    assert "'//etc'" in err.value.message and "normalised" in err.value.message


def _kernel_resolve(path: str) -> str:
    """How Linux resolves a path lexically: repeated slashes are one, '.' is nothing, '..' goes up."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


segments = st.sampled_from(["", ".", "..", "etc", "usr", "home", "jovyan", "mnt", "data", "opt", "dsw", "x.y",
                            "proc", "root", "a-b", "@c", "tmp"])
paths = st.lists(segments, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)) | \
    st.lists(segments, min_size=1, max_size=6).map(lambda parts: "//" + "/".join(parts)) | \
    st.text(alphabet=string.ascii_lowercase[:6] + "/._-", min_size=1, max_size=30)


@settings(max_examples=1500, deadline=None)
@given(paths)
def test_any_accepted_path_is_its_own_normal_form_and_outside_the_refused_roots(path):
    if mount_path_problem(path) is not None:
        return
    resolved = _kernel_resolve(path)
    assert path == normal_form(path) == resolved
    for folder in (*SYSTEM_FOLDERS, HOME):
        assert not (resolved == folder or resolved.startswith(folder + "/")), (path, folder)
        assert not folder.startswith(resolved + "/"), (path, folder)  # nor hides one


# --- finding 6: derived names ----------------------------------------------------------------

def _names(workspace: str, user: str, server: str) -> dict[str, str]:
    return {
        "container": naming.container_name(user, server),
        "home volume / PVC": naming.home_volume_name(workspace, user),
        "user label": naming.label_value(user),
        "server label": naming.server_label(server),
        "s3fs folder": str(local.Layout.under("/s").instance_dir(user, server)),
        "s3fs credentials": str(local.Layout.under("/s").creds_file(user, server, "data")),
    }


def test_the_finding_collisions_are_distinct():
    # user j.doe and user j-doe-d50cd4 (the old hash of j.doe)
    a, b = _names("vision", "j.doe", "x"), _names("vision", "j-doe-d50cd4", "x")
    assert all(a[k] != b[k] for k in a if k != "server label"), (a, b)
    # workspace ml + user research-ann, and workspace ml-research + user ann: the home volume
    assert naming.home_volume_name("ml", "research-ann") != naming.home_volume_name("ml-research", "ann")
    # user a--b (default server) and user a's server b: the container (and its s3fs folder)
    assert naming.container_name("a--b", "") != naming.container_name("a", "b")
    assert _names("w", "a--b", "")["s3fs folder"] != _names("w", "a", "b")["s3fs folder"]
    # the default server and a server named "default" / "_"
    assert len({naming.container_name("a", s) for s in ("", "default", "_")}) == 3
    assert len({naming.server_label(s) for s in ("", "default", "_", "h_default")}) == 4


def test_common_names_read_as_themselves():
    assert naming.container_name("t-alice", "nb") == "dsw-t-alice_nb"
    assert naming.home_volume_name("vision", "t-alice") == "dsw-home-vision.t-alice"
    assert naming.label_value("t-alice") == "t-alice"


def test_kubernetes_names_are_dns_names_or_refused(write_catalog):
    from spawner_ext.kube import objects

    catalog = load_catalog(write_catalog(BASE_CATALOG))
    spec = resolve(catalog, "alice", "", {"workspace": "vision"})
    assert naming.dns_subdomain_problem(objects.pod_fields(spec, objects.KubeSettings()).volumes[0]
                                        ["persistentVolumeClaim"]["claimName"]) is None
    odd = dataclasses.replace(spec, home=dataclasses.replace(spec.home, source=naming.home_volume_name("vision", "bob-")))
    with pytest.raises(ValueError, match="not a DNS name"):
        objects.pod_fields(odd, objects.KubeSettings())


names_text = st.text(alphabet=string.ascii_lowercase[:4] + "-._A/é", min_size=1, max_size=12)
workspace_ids = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?\Z")
triples = st.tuples(workspace_ids, names_text, st.one_of(st.just(""), names_text))


@settings(max_examples=1500, deadline=None)
@given(triples, triples)
def test_distinct_triples_never_share_a_derived_name(t1, t2):
    if t1 == t2:
        return
    n1, n2 = _names(*t1), _names(*t2)
    for key in n1:
        # names that hold only some of the triple are equal exactly when those parts are
        if key == "home volume / PVC":
            same = (t1[0], t1[1]) == (t2[0], t2[1])
        elif key == "user label":
            same = t1[1] == t2[1]
        elif key == "server label":
            same = t1[2] == t2[2]
        else:
            same = (t1[1], t1[2]) == (t2[1], t2[2])
        assert (n1[key] == n2[key]) == same, (key, t1, t2, n1[key])


@settings(max_examples=500, deadline=None)
@given(names_text)
def test_slugs_are_path_components_that_stay_put(text):
    s = naming.slug(text)
    assert "/" not in s and s not in (".", "..", naming.DEFAULT_SERVER) and "_" not in s


def test_image_repositories_are_per_workspace_user_and_name():
    a = naming.image_repository("reg.example/dsw", "ml", "research-ann", "env")
    b = naming.image_repository("reg.example/dsw", "ml-research", "ann", "env")
    c = naming.image_repository("reg.example/dsw", "ml", "research", "ann-env")
    assert len({a, b, c}) == 3
    assert a == "reg.example/dsw/ml/research-ann/env"
    with pytest.raises(ValueError):
        naming.image_repository("reg.example/dsw", "ml", "bob-", "env")


# --- finding 10: NAS symlinks -------------------------------------------------------------------

@pytest.fixture
def nas(tmp_path):
    root = tmp_path / "nas"
    (root / "team" / "alice").mkdir(parents=True)
    return root


def test_a_real_folder_under_the_root_is_accepted(nas):
    assert local.nas_folder_problem(str(nas / "team" / "alice"), str(nas)) is None


def test_a_sub_path_symlinked_to_slash_is_refused(nas):
    (nas / "team" / "bob").symlink_to("/")
    problem = local.nas_folder_problem(str(nas / "team" / "bob"), str(nas))
    assert problem and "symbolic link" in problem and str(nas / "team" / "bob") in problem


def test_a_symlink_chain_in_the_sub_path_is_refused(nas, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "x").mkdir(parents=True)
    (nas / "hop1").symlink_to(nas / "hop2")
    (nas / "hop2").symlink_to(outside)
    problem = local.nas_folder_problem(str(nas / "hop1" / "x"), str(nas))
    assert problem and "symbolic link" in problem and "hop1" in problem
    # a link that stays inside is refused too: it could be repointed after the check
    (nas / "inside").symlink_to(nas / "team")
    assert "symbolic link" in local.nas_folder_problem(str(nas / "inside" / "alice"), str(nas))


def test_a_folder_outside_the_root_is_refused(nas, tmp_path):
    (tmp_path / "other").mkdir()
    assert "not under" in local.nas_folder_problem(str(tmp_path / "other"), str(nas))


# --- finding 12: s3fs folders ---------------------------------------------------------------------

@pytest.fixture
def open_state():
    """A state folder every host user can pass through (pytest's tmp_path is root's 0700 folder,
    which would hide everything below it from other users whatever the rule)."""
    state = Path(tempfile.mkdtemp(prefix="dsw-sec-", dir="/tmp"))
    state.chmod(0o711)
    yield state
    shutil.rmtree(state)


def test_s3fs_folders_are_private_to_the_instance_uid(open_state):
    layout = local.Layout.under(open_state)
    point = layout.mount_point("st-alice", "nb", "data")
    layout.root.mkdir(mode=0o711)  # as ensure_shared_root leaves it
    local.private_dirs(layout.root, point, uid=1000, gid=100)
    for folder in (point.parent.parent, point.parent, point):
        st_ = folder.stat()
        assert stat.S_IMODE(st_.st_mode) == 0o700 and (st_.st_uid, st_.st_gid) == (1000, 100), folder
    # another host user cannot even list the instance's folder
    other = subprocess.run(["setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups", "ls", str(point)],
                           capture_output=True, text=True)
    assert other.returncode != 0 and "Permission denied" in other.stderr
    mine = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "100", "--clear-groups", "ls", str(point)],
                          capture_output=True, text=True)
    assert mine.returncode == 0, mine.stderr


def test_s3fs_mounts_are_not_readable_by_others():
    mount = Mount(type="oss", source="b", mount_path="/mnt/o", storage="o", endpoint="http://127.0.0.1:1")
    cmd = local.s3fs_command(mount, Path("/m"), Path("/c"))
    opts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-o"]
    assert "umask=0077" in opts and "mp_umask=0077" in opts and "uid=1000" in opts


def test_private_dirs_refuse_a_planted_symlink(tmp_path):
    layout = local.Layout.under(tmp_path)
    (layout.root).mkdir(parents=True)
    os.symlink("/", layout.root / naming.slug("st-eve"))
    with pytest.raises(local.StorageError, match="not a folder"):
        local.private_dirs(layout.root, layout.mount_point("st-eve", "", "data"), uid=1000, gid=100)
