"""Mount-path rules: a table of good and bad paths, for catalogue defaults and spawn options alike."""

import pytest

from spawner_ext import spec
from spawner_ext.storage import paths
from spawner_ext.storage.paths import mount_path_problem, render_sub_path, sub_path_template_problem

GOOD = ["/mnt/data", "/data", "/mnt/nas/team-a", "/workspace/datasets", "/mnt/v1.2_raw@eu+x", "/srv/oss",
        "/opt/data", "/homework", "/home/other", "/mnt/etc", "/usr-data"]

BAD = [
    ("", "non-empty"),
    (None, "non-empty"),
    (5, "non-empty"),
    ("mnt/data", "absolute"),
    ("./data", "absolute"),
    ("/", "must not be '/'"),
    ("/mnt/../etc", "'..'"),
    ("/mnt/data/..", "'..'"),
    ("/mnt//data", "normalised"),
    ("/mnt/data/", "normalised"),
    ("/mnt/./data", "normalised"),
    ("/mnt/da ta", "letters, digits"),
    ("/mnt/data;rm", "letters, digits"),
    ("/mnt/dätä", "letters, digits"),
    ("/mnt/" + "x" * 260, "longer than"),
    ("/etc", "system folder /etc"),
    ("/etc/data", "system folder /etc"),
    ("/bin", "system folder /bin"),
    ("/boot/x", "system folder /boot"),
    ("/dev/shm", "system folder /dev"),
    ("/lib", "system folder /lib"),
    ("/lib64", "system folder /lib64"),
    ("/proc/1", "system folder /proc"),
    ("/root", "system folder /root"),
    ("/run/secrets", "system folder /run"),
    ("/sbin", "system folder /sbin"),
    ("/sys/fs", "system folder /sys"),
    ("/usr/local/data", "system folder /usr"),
    ("/var/lib/x", "system folder /var"),
    ("/tmp/x", "system folder /tmp"),
    ("/opt/dsw", "system folder /opt/dsw"),
    ("/opt/dsw/venv", "system folder /opt/dsw"),
    ("/opt", "would hide the system folder /opt/dsw"),
    ("/home/jovyan", "home folder"),
    ("/home/jovyan/data", "home folder"),
    ("/home", "home folder"),
]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths(path):
    assert mount_path_problem(path) is None


@pytest.mark.parametrize("path,reason", BAD)
def test_bad_paths(path, reason):
    problem = mount_path_problem(path)
    assert problem and reason in problem, problem


def test_home_is_the_specs_home():
    assert paths.HOME == spec.HOME


@pytest.mark.parametrize("a,b,expected", [
    ("/mnt/a", "/mnt/a", True), ("/mnt/a", "/mnt/a/b", True), ("/mnt/a/b", "/mnt/a", True),
    ("/mnt/a", "/mnt/ab", False), ("/mnt/a", "/mnt/b", False)])
def test_overlaps(a, b, expected):
    assert paths.overlaps(a, b) is expected


@pytest.mark.parametrize("template,problem", [
    ("", None), ("{workspace}/{user}", None), ("teams/{workspace}/{server}", None),
    ("/abs/{user}", "relative"), ("{user}/../x", "'..'"), ("{uid}", "unknown placeholder {uid}"),
    ("{user", "may hold only"), ("a b/{user}", "may hold only")])
def test_sub_path_templates(template, problem):
    got = sub_path_template_problem(template)
    assert (got is None) if problem is None else (problem in got), got


def test_render_sub_path():
    assert render_sub_path("{workspace}/{user}", workspace="vision", user="alice", server="nb") == "vision/alice"
    assert render_sub_path("", workspace="v", user="a", server="s") == ""
    assert render_sub_path("x/./{server}/", workspace="v", user="a", server="nb") == "x/nb"
