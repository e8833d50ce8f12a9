"""The pure parts of SSO: mapping provider groups to workspace roles, validating the map,
and writing sso memberships (admin rows and YAML members win; stale sso rows go)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from spawner_ext import rbac
from spawner_ext.catalog import Catalog
from spawner_ext.catalog.db import AuditEvent, MemberChange, sessions
from spawner_ext.roles import Role
from spawner_ext.sso import RoleMapError, apply_sso_roles, hub_groups, parse_role_map, workspace_roles

CAT = Catalog.model_validate({
    "platform_admins": ["root"],
    "workspaces": [
        {"id": "vision", "members": {"alice": "owner", "bob": "developer"}},
        {"id": "nlp", "members": {"nina": "developer"}},
    ],
})


def test_highest_role_wins_and_unmapped_groups_are_ignored():
    parsed = parse_role_map({"v-lab": ["vision:labeler"], "v-dev": ["vision:developer"],
                             "v-ops": ["vision:ops"], "n": ["nlp:visitor"]}, CAT)
    assert workspace_roles(["v-lab", "v-dev", "unknown"], parsed) == {"vision": Role.developer}
    # ops ranks above developer (owner > admin > ops > developer > labeler > visitor)
    assert workspace_roles(["v-dev", "v-ops", "n"], parsed) == {"vision": Role.ops, "nlp": Role.visitor}
    assert workspace_roles([], parsed) == {}
    assert workspace_roles(["unknown"], parsed) == {}


def test_one_group_several_workspaces():
    parsed = parse_role_map({"leads": ["vision:admin", "nlp:admin"]}, CAT)
    assert workspace_roles(["leads"], parsed) == {"vision": Role.admin, "nlp": Role.admin}


@pytest.mark.parametrize("role_map, message", [
    ({"g": ["vision:owner"]}, "workspace_role_map['g']: 'vision:owner': an identity-provider group may not grant 'owner'"),
    ({"g": ["mars:developer"]}, "workspace_role_map['g']: 'mars:developer': unknown workspace 'mars'"),
    ({"g": ["vision:boss"]}, "workspace_role_map['g']: 'vision:boss': unknown role 'boss'"),
    ({"g": ["vision"]}, "workspace_role_map['g']: 'vision' is not 'workspace:role'"),
    ({"g": ["a:b:c"]}, "workspace_role_map['g']: 'a:b:c' is not 'workspace:role'"),
    ({"g": 3}, "workspace_role_map['g']: must be a list"),
])
def test_bad_entries_are_named(role_map, message):
    with pytest.raises(RoleMapError) as err:
        parse_role_map(role_map, CAT)
    assert message in str(err.value)


def test_every_bad_entry_is_reported():
    with pytest.raises(RoleMapError) as err:
        parse_role_map({"a": ["vision:owner", "nlp:developer"], "b": ["x:visitor"]}, CAT)
    text = str(err.value)
    assert "'vision:owner'" in text and "'x:visitor'" in text and "nlp:developer" not in text


def rows(factory) -> dict[tuple[str, str], tuple[str | None, str]]:
    with factory() as s:
        return {(r.workspace, r.user): (r.role, r.source) for r in s.scalars(select(MemberChange))}


def test_apply_writes_updates_and_removes_only_sso_rows(tmp_path):
    factory = sessions(f"sqlite:///{tmp_path / 'dsw.sqlite'}")
    live = apply_sso_roles(factory, CAT, "carol", {"vision": Role.developer, "nlp": Role.labeler})
    assert rows(factory) == {("vision", "carol"): ("developer", "sso"), ("nlp", "carol"): ("labeler", "sso")}
    assert live.memberships("carol") == {"vision": Role.developer, "nlp": Role.labeler}
    assert hub_groups(live, "carol") == sorted([
        rbac.ws_group("nlp"), rbac.ws_role_group("nlp", "labeler"), rbac.ws_group("vision"),
        rbac.ws_builders_group("vision"), rbac.ws_role_group("vision", "developer")])

    live = apply_sso_roles(factory, CAT, "carol", {"vision": Role.ops})  # nlp group gone at the provider
    assert rows(factory) == {("vision", "carol"): ("ops", "sso")}
    assert live.memberships("carol") == {"vision": Role.ops}

    live = apply_sso_roles(factory, CAT, "carol", {})
    assert rows(factory) == {} and live.memberships("carol") == {}
    apply_sso_roles(factory, CAT, "carol", {})  # nothing changed: nothing audited

    with factory() as s:
        events = [(e.actor, e.action, e.workspace, e.target, e.detail.split(";")[0])
                  for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert events == [("sso", "set-member", "vision", "carol", "role=developer"),
                      ("sso", "set-member", "nlp", "carol", "role=labeler"),
                      ("sso", "remove-member", "nlp", "carol", "at login, from identity-provider groups"),
                      ("sso", "set-member", "vision", "carol", "role=ops"),
                      ("sso", "remove-member", "vision", "carol", "at login, from identity-provider groups")]


def test_admin_rows_and_yaml_members_win(tmp_path):
    factory = sessions(f"sqlite:///{tmp_path / 'dsw.sqlite'}")
    with factory() as s, s.begin():
        s.add(MemberChange(workspace="vision", user="dave", role="visitor", source="admin"))
        s.add(MemberChange(workspace="nlp", user="dave", role=None, source="admin"))  # removed by an admin
        s.add(MemberChange(workspace="nlp", user="erin", role="labeler", source="sso"))
    before = rows(factory)
    live = apply_sso_roles(factory, CAT, "dave", {"vision": Role.admin, "nlp": Role.developer})
    assert rows(factory) == before  # nothing of dave's changed, erin untouched
    assert live.memberships("dave") == {"vision": Role.visitor}

    # bob is a YAML developer of vision: the mapping neither overrides nor removes him
    live = apply_sso_roles(factory, CAT, "bob", {"vision": Role.admin, "nlp": Role.visitor})
    assert live.memberships("bob") == {"vision": Role.developer, "nlp": Role.visitor}
    live = apply_sso_roles(factory, CAT, "bob", {})
    assert live.memberships("bob") == {"vision": Role.developer}
    assert ("vision", "bob") not in rows(factory)
