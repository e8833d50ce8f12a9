"""The start-up script wrapper (spawner_ext/startup.py) run by a real POSIX shell, and the
parser the hub reads its lines with. The end-to-end runs on both backends are in
tests/lifecycle/test_startup_script.py."""

from __future__ import annotations

import os
import subprocess
import time

from spawner_ext import startup
from spawner_ext.catalog import load_catalog
from spawner_ext.local.container import create_kwargs
from spawner_ext.options import resolve
from tests.conftest import BASE_CATALOG


def run(tmp_path, script: str, server=("echo", "SERVER")):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **startup.environment(script)}
    return subprocess.run(startup.command(list(server), script), env=env, capture_output=True, text=True, timeout=30)


def test_no_script_leaves_the_command_alone():
    assert startup.command(["jupyterhub-singleuser", "--debug"], "") == ["jupyterhub-singleuser", "--debug"]
    assert startup.environment("") == {}


def test_lines_then_the_server(tmp_path):
    p = run(tmp_path, "echo one\necho two >&2\nprintf 'no newline'")
    assert p.returncode == 0, p.stderr
    out = startup.read(p.stdout)
    assert out == startup.Output(("one", "two", "no newline"), 0)
    assert p.stdout.rstrip().endswith("SERVER")  # the server ran after the script, with its args
    assert (tmp_path / ".dsw" / "startup.log").read_text() == "one\ntwo\nno newline\n"


def test_a_failing_script_stops_before_the_server(tmp_path):
    p = run(tmp_path, "echo step 1\nfalse\necho step 2\nexit 7")
    assert p.returncode == 7 and "SERVER" not in p.stdout
    out = startup.read(p.stdout)
    assert out.status == 7 and out.lines == ("step 1", "step 2")
    assert "failed with exit status 7; its last lines: step 1 | step 2" in out.failure()


def test_a_background_process_does_not_hold_the_start(tmp_path):
    """A script that leaves a service running (its output still open) must not block the server."""
    began = time.monotonic()
    p = run(tmp_path, "(sleep 20; echo late) &\necho started")
    assert p.returncode == 0 and startup.read(p.stdout).lines == ("started",)
    assert time.monotonic() - began < 15, "the wrapper waited for the background process"


def test_the_server_does_not_inherit_the_script(tmp_path):
    p = run(tmp_path, "true", server=("sh", "-c", "env"))
    assert "DSW_STARTUP_SCRIPT" not in p.stdout and "HOME=" in p.stdout


def test_an_unwritable_home_falls_back_to_tmp(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        p = run(home, "echo fine")
    finally:
        home.chmod(0o700)
    if os.geteuid() == 0:  # root writes anyway: the home log is used
        assert (home / ".dsw" / "startup.log").read_text() == "fine\n"
    assert p.returncode == 0 and startup.read(p.stdout).lines == ("fine",)


def test_the_parser_ignores_the_servers_own_output():
    text = "dsw-startup| a\ndsw-startup-end 0\ndsw-startup| not the script\n[I server] started\n"
    assert startup.read(text) == startup.Output(("a",), 0)
    assert startup.read("dsw-startup| a\n") == startup.Output(("a",), None)  # still running


def test_the_local_builder_wraps_the_server_command(write_catalog):
    catalog = load_catalog(write_catalog(BASE_CATALOG))
    plain = resolve(catalog, "bob", "", {"workspace": "nlp", "kind": "terminal"})
    scripted = resolve(catalog, "bob", "", {"workspace": "nlp", "kind": "terminal", "startup_script": "pip install rich"})
    kw = create_kwargs(plain, name="x", cmd=["jupyterhub-singleuser"], env={})
    assert kw["command"] == ["jupyterhub-singleuser"] and "DSW_STARTUP_SCRIPT" not in kw["environment"]
    kw = create_kwargs(scripted, name="x", cmd=["jupyterhub-singleuser"], env={})
    assert kw["command"][:2] == ["sh", "-c"] and kw["command"][-2:] == ["dsw-startup", "jupyterhub-singleuser"]
    assert kw["environment"]["DSW_STARTUP_SCRIPT"] == "pip install rich"
    assert "DSW_STARTUP_SCRIPT" not in str(kw["labels"])  # labels are seen by every engine user
