"""No secret escapes where others can read it (issue 12, part 5). Runs last in this folder
(file order), after the other tests have spawned, crashed, refused and stopped instances on the
same hub, with the OSS entry's keys in use by a running instance.

Secrets: the OSS secret key (given to the hub only, through its environment) and every
member's tokens -- their API tokens and the token each instance's server holds. Places
searched: the hub's log (the hub, its proxy and its services write there), API answers of the
hub and the DSW service (the audit log among them), the engine's view of every test container
(labels, environment, command, mounts), the hub and DSW state databases (spawner state, user
options, audit rows) and every other file under the state folder, and the command lines of the
host's s3fs processes (readable by any local user). An instance's own server token in its own
environment is how it talks to the hub, so it is expected there and nowhere else; the OSS key
is expected only in the 0600 passwd files under ``storage-credentials/`` that s3fs reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import ADMIN, PREFIX, USERS, WS, svc, wait_for

pytestmark = pytest.mark.integration


def server_tokens(engine) -> dict[str, str]:
    """Each test container's own server token (name -> JUPYTERHUB_API_TOKEN)."""
    out = {}
    for c in engine.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if c.labels.get("dsw/user", "").startswith(PREFIX):
            env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"] or [] if "=" in e)
            out[c.name] = env["JUPYTERHUB_API_TOKEN"]
    return out


def found(text: str, secrets: dict[str, str]) -> list[str]:
    return [what for what, value in secrets.items() if value and value in text]


def state_files(state: Path) -> list[Path]:
    """Every regular file under the state folder but the s3fs passwd files (where the OSS key
    must be) and the mount points (FUSE: the bucket's contents, not the hub's)."""
    skip = (state / "storage-credentials", state / "mounts")
    return [p for p in state.rglob("*") if p.is_file() and not p.is_symlink()
            and not any(p.is_relative_to(s) for s in skip)]


def test_no_secret_in_logs_answers_containers_or_state(rhub, instances, engine, oss):
    assert rhub.server_model("rl-ann", "a1")["ready"]  # the OSS keys are in use now
    # an audited action done with the service's token on another member's instance: the
    # owner rl-ann restarts rl-bob's (the restart hands it a new server token)
    before = rhub.server_model("rl-bob", "b1")["started"]
    r = svc(rhub, "rl-ann", "POST", f"/workspaces/{WS}/instances/rl-bob/restart", params={"server": "b1"})
    assert r.status_code == 200, r.text
    wait_for(lambda: (m := rhub.server_model("rl-bob", "b1")) and m.get("ready") and m["started"] != before,
             "rl-bob/b1 runs again")
    tokens = server_tokens(engine)
    assert {"dsw-rl-ann_a1", "dsw-rl-bob_b1"} <= set(tokens), tokens
    oss_secret = {"OSS secret key": oss.member[1]}
    api_tokens = {f"API token of {u}": t for u, t in rhub.tokens.items()}
    every = {**oss_secret, **api_tokens, "admin service token": rhub.token,
             **{f"server token of {name}": t for name, t in tokens.items()}}
    problems = []

    # logs of the hub, the proxy and the services
    log = rhub.log.read_text(errors="replace")
    assert "rl-ann:a1: Mounting oss://dsw-data/rl" in log  # the log is the one of this run
    problems += [f"hub log: {w}" for w in found(log, every)]

    # what the hub and the DSW service answer: each member, and a platform admin
    for who in (*USERS, ADMIN):
        answers = {f"hub /users/{who}": rhub.api("GET", f"/users/{who}", token=rhub.tokens[who])}
        if who == ADMIN:
            answers["hub /users"] = rhub.api("GET", "/users", params={"include_stopped_servers": "1"})
            answers["service /allocations"] = svc(rhub, who, "GET", "/allocations")
            answers["service /audit"] = svc(rhub, who, "GET", "/audit", params={"limit": 1000})
        else:
            answers["service /workspaces"] = svc(rhub, who, "GET", "/workspaces")
            answers[f"service /workspaces/{WS}"] = svc(rhub, who, "GET", f"/workspaces/{WS}")
            answers[f"service /workspaces/{WS}/instances"] = svc(rhub, who, "GET", f"/workspaces/{WS}/instances")
        for what, r in answers.items():
            assert r.status_code == 200, (what, r.status_code, r.text[:300])
            # the caller's own API token is theirs to send, not a leak in the answer
            leaked = found(r.text, {k: v for k, v in every.items() if k != f"API token of {who}"})
            problems += [f"{what} as {who}: {w}" for w in leaked]
    audit = svc(rhub, ADMIN, "GET", "/audit", params={"limit": 1000}).json()
    assert any(a["action"] == "restart-instance" and a["target"] == "rl-bob/b1" for a in audit), audit

    # the engine's view of each instance: its own server token only
    for c in engine.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if not c.labels.get("dsw/user", "").startswith(PREFIX):
            continue
        inspected = json.dumps(c.attrs)
        assert tokens[c.name] in inspected  # the scan sees the environment: its own token is there
        others = {k: v for k, v in every.items() if k != f"server token of {c.name}"}
        problems += [f"engine inspect of {c.name}: {w}" for w in found(inspected, others)]

    # state: the hub database (spawner state, user options), the DSW database (audit log,
    # reservations, lifecycle records) and every other file the hub keeps
    files = state_files(rhub.state)
    assert {"jupyterhub.sqlite", "dsw.sqlite", "hub.log"} <= {p.name for p in files}
    for path in files:
        text = path.read_bytes().decode("latin-1")
        problems += [f"{path.relative_to(rhub.state)}: {w}" for w in found(text, every)]

    # the key in use is the one searched for: s3fs's passwd file holds it (and only there)
    passwd = [p for p in (rhub.state / "storage-credentials").rglob("*") if p.is_file()]
    assert any(oss.member[1] in p.read_text() for p in passwd), passwd

    # the s3fs mount of the running instance: its command line names a passwd file, no key
    s3fs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith("s3fs ")
            and str(rhub.state) in _cmdline(p)]
    assert s3fs, "rl-ann/a1's OSS mount has no s3fs process"
    problems += [f"s3fs command line {_cmdline(p)}: {w}" for p in s3fs for w in found(_cmdline(p), every)]

    assert not problems, "\n".join(problems)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
