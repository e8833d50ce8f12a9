"""SSO end to end: a real OpenID Connect provider process (oidc-provider-mock) on loopback and a
real hub + proxy + DSW service with DSW_AUTH=oidc. Users log in through the hub's OAuth flow with
requests; the provider's groups claim decides their workspace roles at each login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import yaml
from sqlalchemy import select

from spawner_ext import rbac
from spawner_ext.catalog.db import MemberChange, sessions
from spawner_ext.sso import PLATFORM_ADMIN_GROUP
from tests.integration.hubproc import ROOT, Hub, free_port

pytestmark = pytest.mark.integration

ROLE_MAP = {
    "vision-devs": ["tvision:developer"],
    "vision-ops": ["tvision:ops"],
    "nlp-labelers": ["tnlp:labeler"],
    "ml-leads": ["tvision:admin", "tnlp:admin"],
}


def write_catalog(tmp: Path) -> Path:
    data = {
        "image_metadata": str(ROOT / "images" / "images.yaml"),
        "platform_admins": ["t-root"],
        "workspaces": [
            {"id": "tvision", "members": {"t-alice": "owner"}, "resource_groups": ["cpu"]},
            {"id": "tnlp", "members": {"t-bob": "developer"}, "resource_groups": ["cpu"]},
        ],
        "instance_types": [{"id": "small", "cpu": 1, "memory": "1Gi"}],
        "resource_groups": [{"id": "cpu", "capacity": {"cpu": 8, "memory": "16Gi"}}],
    }
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Provider:
    """oidc-provider-mock as a server process; any client id/secret is accepted."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logf = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if requests.get(f"{self.url}/.well-known/openid-configuration", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"OpenID provider did not start:\n{log.read_text()}")

    def set_user(self, username: str, groups: list[str], **claims) -> None:
        """The provider's user whose subject (``sub``) is ``username``; ``claims`` overrides the
        profile claims (what a user may edit at many providers)."""
        claims = {"preferred_username": username, "email": f"{username}@example.org", "groups": groups, **claims}
        r = requests.put(f"{self.url}/users/{quote(username)}", json=claims, timeout=10)
        assert r.status_code == 204, r.text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    p = Provider(tmp_path_factory.mktemp("oidc") / "provider.log")
    yield p
    p.stop()


def sso_env(provider: Provider, role_map: dict) -> dict:
    return {"DSW_AUTH": "oidc", "DSW_OIDC_ISSUER": provider.url, "DSW_OIDC_CLIENT_ID": "dsw-hub",
            "DSW_OIDC_CLIENT_SECRET": "not-a-secret", "DSW_OIDC_GROUPS_CLAIM": "groups",
            "DSW_OIDC_ROLE_MAP": json.dumps(role_map), "DSW_SERVICE_PORT": str(free_port()),
            "DSW_OIDC_ADMIN_GROUPS": "dsw-admins"}


@pytest.fixture(scope="module")
def sso_hub(tmp_path_factory, provider):
    tmp = tmp_path_factory.mktemp("ssohub")
    # no instance is spawned: the engine URL is never used
    h = Hub(tmp / "state", write_catalog(tmp), "unix:///nonexistent/engine.sock", sso_env(provider, ROLE_MAP))
    h.start()
    yield h
    h.stop()


def login(hub: Hub, provider: Provider, username: str, groups: list[str], **claims) -> requests.Response:
    """The browser's path: hub -> provider's authorization form (submitted as `username`) -> hub."""
    provider.set_user(username, groups, **claims)
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["location"].startswith(f"{provider.url}/oauth2/authorize"), r.text
    r = s.post(r.headers["location"], data={"sub": username}, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/oauth_callback" in r.headers["location"], r.text
    return s.get(r.headers["location"], timeout=30)  # follows to /hub/home (or stops at 403)


def hub_groups(hub: Hub, username: str) -> list[str]:
    r = hub.api("GET", f"/users/{username}")
    r.raise_for_status()
    return sorted(r.json()["groups"])


def service_roles(hub: Hub, username: str) -> dict[str, str | None]:
    """What the DSW service says: the user's role per workspace they can see."""
    token = hub.user_token(username)
    url = f"{hub.url}/services/dsw/api/v1/workspaces"
    deadline = time.monotonic() + 30
    while True:  # the hub starts the service alongside itself
        r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
        if r.status_code not in (502, 503) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 200, r.text
    return {w["id"]: w["role"] for w in r.json()}


def sso_rows(hub: Hub, username: str) -> dict[str, tuple[str | None, str]]:
    with sessions(f"sqlite:///{hub.state / 'dsw.sqlite'}")() as s:
        return {r.workspace: (r.role, r.source)
                for r in s.scalars(select(MemberChange).where(MemberChange.user == username))}


def test_groups_map_to_roles_and_follow_the_provider(sso_hub, provider):
    r = login(sso_hub, provider, "t-carol", ["vision-devs", "nlp-labelers", "unrelated"])
    assert r.status_code == 200 and r.url.endswith("/hub/home"), (r.status_code, r.url)
    assert hub_groups(sso_hub, "t-carol") == sorted([
        rbac.ws_group("tnlp"), rbac.ws_role_group("tnlp", "labeler"), rbac.ws_group("tvision"),
        rbac.ws_builders_group("tvision"), rbac.ws_role_group("tvision", "developer")])
    assert service_roles(sso_hub, "t-carol") == {"tvision": "developer", "tnlp": "labeler"}
    assert sso_rows(sso_hub, "t-carol") == {"tvision": ("developer", "sso"), "tnlp": ("labeler", "sso")}

    # at the provider: ops added (outranks developer), the nlp group removed; effective at next login
    provider.set_user("t-carol", ["vision-devs", "vision-ops"])
    assert rbac.ws_role_group("tvision", "ops") not in hub_groups(sso_hub, "t-carol")  # not before the login
    r = login(sso_hub, provider, "t-carol", ["vision-devs", "vision-ops"])
    assert r.status_code == 200
    assert hub_groups(sso_hub, "t-carol") == sorted([
        rbac.ws_group("tvision"), rbac.ws_builders_group("tvision"), rbac.ws_role_group("tvision", "ops")])
    assert service_roles(sso_hub, "t-carol") == {"tvision": "ops"}
    assert sso_rows(sso_hub, "t-carol") == {"tvision": ("ops", "sso")}

    # one group granting admin in both workspaces
    r = login(sso_hub, provider, "t-carol", ["ml-leads"])
    assert r.status_code == 200
    assert service_roles(sso_hub, "t-carol") == {"tvision": "admin", "tnlp": "admin"}
    assert rbac.ws_role_group("tnlp", "admin") in hub_groups(sso_hub, "t-carol")


def test_unmapped_user_is_refused_and_gets_nothing(sso_hub, provider):
    r = login(sso_hub, provider, "t-mallory", ["unrelated", "staff"])
    assert r.status_code == 403
    assert sso_hub.api("GET", "/users/t-mallory").status_code == 404  # no hub user was created
    assert sso_rows(sso_hub, "t-mallory") == {}


def test_losing_every_mapped_group_removes_the_membership_and_the_login(sso_hub, provider):
    assert login(sso_hub, provider, "t-dan", ["nlp-labelers"]).status_code == 200
    assert service_roles(sso_hub, "t-dan") == {"tnlp": "labeler"}
    r = login(sso_hub, provider, "t-dan", [])
    assert r.status_code == 403
    assert sso_rows(sso_hub, "t-dan") == {}
    # refused, and out of every group: a token issued earlier loses the workspace role too
    assert hub_groups(sso_hub, "t-dan") == []
    assert service_roles(sso_hub, "t-dan") == {}


def test_catalogue_members_and_platform_admins_log_in_without_mapped_groups(sso_hub, provider):
    # t-bob is a YAML developer of tnlp; the provider says ml-leads (admin): the catalogue wins there,
    # and the mapping adds tvision
    r = login(sso_hub, provider, "t-bob", ["ml-leads"])
    assert r.status_code == 200
    assert service_roles(sso_hub, "t-bob") == {"tnlp": "developer", "tvision": "admin"}
    assert sso_rows(sso_hub, "t-bob") == {"tvision": ("admin", "sso")}
    r = login(sso_hub, provider, "t-bob", [])
    assert r.status_code == 200
    assert hub_groups(sso_hub, "t-bob") == sorted([
        rbac.ws_group("tnlp"), rbac.ws_builders_group("tnlp"), rbac.ws_role_group("tnlp", "developer")])


def platform_admin(hub: Hub, username: str) -> bool:
    """What the DSW service says: may this user read every workspace's allocations?"""
    r = requests.get(f"{hub.url}/services/dsw/api/v1/allocations", timeout=30,
                     headers={"Authorization": f"token {hub.user_token(username)}"})
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


def test_platform_admins_come_from_the_admin_group_not_from_a_name(sso_hub, provider):
    """Finding 9: a name in the catalogue's platform_admins no longer makes an SSO admin; the
    provider's admin group does, and leaving it takes the rights away at the next login."""
    r = login(sso_hub, provider, "t-root", [])  # the catalogue's platform admin, by name only
    assert r.status_code == 403
    assert sso_hub.api("GET", "/users/t-root").status_code == 404

    r = login(sso_hub, provider, "t-opal", ["dsw-admins"])
    assert r.status_code == 200
    assert sso_hub.api("GET", "/users/t-opal").json()["admin"] is True
    assert PLATFORM_ADMIN_GROUP in hub_groups(sso_hub, "t-opal") and platform_admin(sso_hub, "t-opal")

    r = login(sso_hub, provider, "t-opal", ["vision-devs"])  # left the admin group at the provider
    assert r.status_code == 200
    assert sso_hub.api("GET", "/users/t-opal").json()["admin"] is False
    assert PLATFORM_ADMIN_GROUP not in hub_groups(sso_hub, "t-opal") and not platform_admin(sso_hub, "t-opal")


def test_an_edited_profile_name_is_not_an_identity(sso_hub, provider):
    """Finding 9: users are named from ``sub``. Mallory edits her preferred_username (and email)
    to alice's and to the platform admin's: she stays mallory, with nothing of theirs."""
    assert login(sso_hub, provider, "t-alice", []).status_code == 200
    before = hub_groups(sso_hub, "t-alice")
    for victim in ("t-alice", "t-root"):
        r = login(sso_hub, provider, "t-mallory2", ["vision-devs"], preferred_username=victim,
                  email=f"{victim}@example.org", name=victim)
        assert r.status_code == 200
        me = sso_hub.api("GET", "/users/t-mallory2").json()
        assert me["admin"] is False
        assert service_roles(sso_hub, "t-mallory2") == {"tvision": "developer"}
    assert hub_groups(sso_hub, "t-alice") == before
    assert sso_hub.api("GET", "/users/t-root").status_code == 404
    assert service_roles(sso_hub, "t-alice") == {"tvision": "owner"}


def test_an_admins_decision_outlasts_the_next_login(sso_hub, provider):
    assert login(sso_hub, provider, "t-alice", []).status_code == 200  # the YAML owner of tvision
    assert login(sso_hub, provider, "t-erin", ["vision-ops"]).status_code == 200
    alice = sso_hub.user_token("t-alice")
    r = requests.put(f"{sso_hub.url}/services/dsw/api/v1/workspaces/tvision/members/t-erin",
                     json={"role": "visitor"}, headers={"Authorization": f"token {alice}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert sso_rows(sso_hub, "t-erin") == {"tvision": ("visitor", "admin")}
    r = login(sso_hub, provider, "t-erin", ["vision-ops"])
    assert r.status_code == 200
    assert service_roles(sso_hub, "t-erin") == {"tvision": "visitor"}
    assert hub_groups(sso_hub, "t-erin") == sorted([rbac.ws_group("tvision"), rbac.ws_role_group("tvision", "visitor")])


def test_a_bad_role_map_stops_the_hub_naming_the_entry(tmp_path, provider):
    h = Hub(tmp_path / "state", write_catalog(tmp_path), "unix:///nonexistent/engine.sock",
            sso_env(provider, {"staff": ["tvision:owner"], "x": ["mars:developer"]}))
    try:
        with pytest.raises(RuntimeError) as err:
            h.start(timeout=60)
    finally:
        h.stop()
    text = str(err.value)
    assert "workspace_role_map['staff']: 'tvision:owner'" in text
    assert "workspace_role_map['x']: 'mars:developer': unknown workspace 'mars'" in text
