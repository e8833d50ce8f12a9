"""Property tests (Hypothesis) of the pure core's three input gates: the catalogue loader, the
spawn options and the mount-path rules. The table tests (test_catalog, test_options,
test_mount_paths) pin the known cases; these throw arbitrary input at the same functions and
check the contract that holds for every input: a gate either accepts or refuses with a reason
the user can act on (file and path, field and status, a mount-path reason), and never fails
any other way. Fast, no servers; fixed seeds through Hypothesis' derandomised mode."""

from __future__ import annotations

import copy
import posixpath
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spawner_ext.catalog import CatalogError, load_catalog
from spawner_ext.errors import OptionsError
from spawner_ext.options import KNOWN_OPTIONS, resolve
from spawner_ext.spec import InstanceSpec
from spawner_ext.storage.paths import HOME, SYSTEM_FOLDERS, mount_path_problem, normal_form, sub_path_template_problem
from tests.conftest import BASE_CATALOG

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --- YAML-ish values ------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["", "owner", "developer", "visitor", "cpu", "1Gi", "500m", "-1", "*", "vision",
                                     "/mnt/data", "/etc", "../x", "nb-cpu", "public-cpu"]))
yamlish = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), st.integers(-3, 3)), inner,
                                                 max_size=4)), max_leaves=12)
SECTIONS = ["platform_admins", "workspaces", "images", "instance_types", "resource_groups", "storage",
            "image_metadata"]


def _set_at(data, path: list, value):
    """Replace the value at ``path`` (keys/indexes, taken modulo what exists) in ``data``."""
    node = data
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node, key=str)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        else:
            return data
    if isinstance(node, dict) and node:
        node[sorted(node, key=str)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return data


@st.composite
def catalogues(draw):
    """Either a valid catalogue with one value somewhere replaced by arbitrary YAML, a valid one
    with sections replaced, or an arbitrary structure altogether."""
    how = draw(st.integers(0, 2))
    if how == 0:
        data = copy.deepcopy(BASE_CATALOG)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.lists(st.integers(0, 20), min_size=1, max_size=5))
            _set_at(data, path, draw(yamlish))
        return data
    if how == 1:
        data = copy.deepcopy(BASE_CATALOG)
        data.update(draw(st.dictionaries(st.sampled_from(SECTIONS + ["colour"]), yamlish, max_size=3)))
        return data
    return draw(yamlish)


def _dump(data) -> str:
    try:
        return yaml.safe_dump(data)
    except yaml.YAMLError:
        return str(data)


@FAST
@given(data=catalogues())
def test_any_catalogue_loads_or_names_file_and_path(tmp_path, data):
    """Arbitrary YAML structures: a Catalog, or a CatalogError whose every problem names the
    file (the catalogue or the image metadata it references) and a message; nothing else."""
    path = tmp_path / "catalog.yaml"
    path.write_text(_dump(data))
    try:
        cat = load_catalog(path)
    except CatalogError as exc:
        assert exc.problems
        for file, where, message in exc.problems:
            assert file.startswith(str(tmp_path)) or file.endswith(".yaml") or file.endswith(".yml") or \
                "cannot read" in message, (file, where, message)
            assert isinstance(where, str) and message, (file, where, message)
            assert file in str(exc) and message in str(exc)
    else:
        given_ws = (data if isinstance(data, dict) else {}).get("workspaces") or []
        assert {w.id for w in cat.workspaces} <= {w.get("id") for w in given_ws if isinstance(w, dict)}


@FAST
@given(text=st.text(max_size=200))
def test_any_text_loads_or_names_file(tmp_path, text):
    """Not even YAML: refused with the file and (when the parser knows) line and column."""
    path = tmp_path / "catalog.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_catalog(path)
    except CatalogError as exc:
        assert exc.problems and all(f == str(path) and m for f, _, m in exc.problems), exc.problems


@pytest.mark.parametrize("value", [True, 5, 1.5])
def test_images_scalar_is_a_catalogue_error(tmp_path, value):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({**BASE_CATALOG, "images": value}))
    with pytest.raises(CatalogError) as exc:
        load_catalog(path)
    assert exc.value.problems[0][1].startswith("images")


@pytest.mark.parametrize("value", [["images.yaml"], {"a": 1}, 3, True])
def test_image_metadata_not_a_string_is_a_catalogue_error(tmp_path, value):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({**BASE_CATALOG, "image_metadata": value}))
    with pytest.raises(CatalogError) as exc:
        load_catalog(path)
    assert exc.value.problems[0][1].startswith("image_metadata")


def test_the_catalogue_strategy_reaches_both_outcomes(tmp_path):
    """A property that only ever saw refusals would not check the accepting side: the
    unchanged base catalogue loads, and one replaced value is refused with a path."""
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(BASE_CATALOG))
    load_catalog(path)
    bad = copy.deepcopy(BASE_CATALOG)
    bad["instance_types"][0]["cpu"] = "lots"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(CatalogError) as exc:
        load_catalog(path)
    assert exc.value.problems[0][1] == "instance_types[0].cpu"


# --- spawn options --------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    data = copy.deepcopy(BASE_CATALOG)
    data["storage"] = [{"id": "team", "workspaces": ["*"], "mount_path": "/mnt/team",
                        "nas": {"host_path": "/srv/nas", "sub_path_template": "{workspace}/{user}"}}]
    path = tmp_path_factory.mktemp("props") / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_catalog(path)


USERS = ["alice", "bob", "olga", "lara", "vic", "adam", "nina", "root", "stranger", ""]
OPTION_VALUES = {
    "workspace": ["vision", "nlp", "ghost", "", "VISION"],
    "image": ["nb-cpu", "nb-gpu", "lab-only", "nope"],
    "image_ref": ["registry.example.com/vision/x:1", "docker.io/evil/x:1", "registry.example.com/visionary/x"],
    "instance_type": ["cpu-small", "cpu-half", "gpu-1", "huge"],
    "resource_group": ["public-cpu", "gpu-a10", "nope"],
    "kind": ["notebook", "vscode", "terminal", "emacs"],
    "mounts": [["team"], [{"storage": "team", "mount_path": "/mnt/x"}], [{"storage": "team", "mount_path": "/etc"}],
               [{"storage": "team", "mount_path": "/mnt/../etc"}], "team", [{"storage": "nope"}]],
    "idle_minutes": [0, 30, -1, "60", 10**9, float("nan")],
    "stop_at": ["2099-01-01T00:00:00Z", "yesterday", "2000-01-01T00:00:00"],
    "stop_in_hours": [1, 0, -2, "3", 10**6],
    "startup_script": ["echo hi", "", "x" * 100_000],
}
# JSON object keys are strings (the hub parses user_options from JSON; form fields are strings)
option_keys = st.one_of(st.sampled_from(sorted(KNOWN_OPTIONS)), st.text(max_size=8))


@st.composite
def option_dicts(draw):
    keys = draw(st.lists(option_keys, max_size=5, unique=True))
    out = {}
    for k in keys:
        known = OPTION_VALUES.get(k)
        value = draw(st.sampled_from(known)) if known and draw(st.booleans()) else draw(yamlish)
        if draw(st.integers(0, 5)) == 0:
            value = [value]  # form fields arrive as lists
        out[k] = value
    return out


@FAST
@given(user=st.sampled_from(USERS), server=st.sampled_from(["", "s1", "My Server"]), options=option_dicts())
def test_any_options_give_a_spec_or_a_field_and_status(catalog, user, server, options):
    """Arbitrary option dicts: an InstanceSpec of a workspace the user is a member of, or an
    OptionsError with status 400/403 naming a field (a known option, or the unknown key given,
    or one inside ``mounts``). Any other exception is a bug (it would be a 500 at spawn)."""
    try:
        spec = resolve(catalog, user, server, options)
    except OptionsError as exc:
        assert exc.status in (400, 403), exc
        top = exc.field.split("[")[0].split(".")[0]
        assert top in KNOWN_OPTIONS or exc.field in options or exc.field == "options", exc
        assert exc.message and str(exc).startswith(f"{exc.field}: ")
    else:
        assert isinstance(spec, InstanceSpec)
        assert catalog.memberships(user).get(spec.workspace), (user, spec.workspace)
        for m in spec.mounts:
            assert mount_path_problem(m.mount_path) is None, m


json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


@FAST
@given(options=st.one_of(json_values, st.lists(json_values)))
def test_any_json_body_gives_a_spec_or_a_field_and_status(catalog, options):
    """Any JSON body (the REST API's user_options: object keys are strings): a spec only for an
    object; else an OptionsError with 400/403 naming a field (never another exception)."""
    try:
        resolve(catalog, "alice", "", options)
    except OptionsError as exc:
        assert exc.status in (400, 403) and isinstance(exc.field, str) and exc.message
        if not isinstance(options, dict):
            assert (exc.status, exc.field) == (400, "options")
    else:
        assert isinstance(options, dict)


def test_the_options_strategy_reaches_both_outcomes(catalog):
    assert resolve(catalog, "alice", "s1", {"mounts": ["team"]}).mounts
    with pytest.raises(OptionsError) as exc:
        resolve(catalog, "alice", "s1", {"mounts": [{"storage": "team", "mount_path": "/mnt/../etc"}]})
    assert exc.value.status == 400 and exc.value.field.startswith("mounts[0]")


# --- mount paths ----------------------------------------------------------------------
segment = st.one_of(st.sampled_from(["mnt", "data", "..", ".", "", "etc", "home", "jovyan", "usr", "x", "a.b",
                                     "..." , "proc", "tmp", "opt", "dsw", "@v1", "-"]),
                    st.text(alphabet="abz09._-/@+\\ \x00é~$*\n\t", max_size=6))
paths = st.one_of(st.lists(segment, max_size=6).map("/".join),
                  st.lists(segment, max_size=6).map(lambda s: "/" + "/".join(s)),
                  st.text(max_size=40), st.none(), st.integers(), st.just("/" + "a" * 300),
                  # good paths with one character more at the end (regex anchors, whitespace, NUL)
                  st.builds(lambda p, c: p + c, st.sampled_from(["/mnt/data", "/srv/x", "/data"]),
                            st.sampled_from(["\n", "\r", "\t", " ", "\x00", "/", "/.", "/..", "\u2028"])))


@settings(max_examples=600, deadline=None, derandomize=True)
@given(path=paths)
def test_mount_paths_are_refused_with_a_reason_or_stay_inside(path):
    """A refused path gets a reason; an accepted one is absolute, normalised (no '..', no '.',
    no '//', no trailing '/'), is not '/', and neither covers nor sits in a system folder or
    the home folder: normalising it (as the kernel would) changes nothing, so no spelling of
    a forbidden folder gets through."""
    problem = mount_path_problem(path)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    assert isinstance(path, str) and path.startswith("/") and path != "/"
    assert set(path) <= set(string.ascii_letters + string.digits + "._-@+/"), path
    parts = path.split("/")[1:]
    assert all(p not in ("", ".", "..") for p in parts), path
    assert "//" not in path and not path.endswith("/")
    assert posixpath.normpath(path) == path == normal_form(path)
    for folder in (*SYSTEM_FOLDERS, HOME):
        assert not (path == folder or path.startswith(folder + "/") or folder.startswith(path + "/")), path


@pytest.mark.parametrize("check,value", [(mount_path_problem, "/mnt/data\n"), (sub_path_template_problem, "{user}\n")])
def test_a_trailing_newline_is_refused(check, value):
    assert check(value), repr(value)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(prefix=st.sampled_from(["/mnt/data", "/srv/x"]), trick=st.sampled_from(
    ["/../etc", "/./../../etc", "//etc", "/../../root", "/..", "/.//..", "/x/../../proc/1"]),
    tail=st.sampled_from(["", "/", "/passwd"]))
def test_traversal_and_doubled_slash_tricks_are_refused(prefix, trick, tail):
    """Spellings that would resolve somewhere else than they read ('..', '.', '//') are always
    refused, whatever resolves in the end: a symlink-like escape has no accepted spelling."""
    path = prefix + trick + tail
    assert mount_path_problem(path), path


@settings(max_examples=300, deadline=None, derandomize=True)
@given(folder=st.sampled_from([*SYSTEM_FOLDERS, HOME]), spelling=st.sampled_from(["{f}", "/{f}", "{f}/", "{f}/.",
                                                                                  "/.{f}", "{f}/sub", "{f}//sub"]))
def test_no_spelling_of_a_protected_folder_is_accepted(folder, spelling):
    path = spelling.format(f=folder)
    assert mount_path_problem(path), path
