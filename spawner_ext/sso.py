"""Single sign-on: oauthenticator's GenericOAuthenticator against an OpenID Connect provider,
with the provider's groups mapped to workspace roles at every login.

At each login (and only then: a change at the provider takes effect at the member's next login):

1. the user's identity-provider groups are read from the claim named by
   ``auth_state_groups_key`` (``oauth_user.<claim>``: the userinfo response);
2. ``workspace_role_map`` turns them into one role per workspace; if several groups map to the
   same workspace the highest role wins (owner > admin > ops > developer > labeler > visitor);
3. those roles are written as ``MemberChange`` rows with ``source="sso"`` in one transaction;
   this user's earlier sso rows that no longer apply are deleted; each change is appended to
   the audit log (actor "sso") in the same transaction. Precedence, highest first:
   a row written by a workspace/platform admin (``source="admin"``, including a removal),
   then the YAML catalogue's membership, then the identity provider. So an admin's decision
   sticks, the YAML baseline is never overridden, and a mapping only adds members;
4. ``auth_model["groups"]`` is set to exactly the JupyterHub groups the user belongs to in the
   effective catalogue (``rbac.groups``): with ``manage_groups`` the hub makes the user's groups
   equal that list, so YAML and admin memberships are included too.

An identity-provider mapping may not grant ``owner`` (a workspace has exactly one owner, named
in the catalogue or by its owner/a platform admin); the startup validation refuses it.

Identity: the hub user is named from ``username_claim``, by default ``sub``: the provider's
stable subject identifier, which a user cannot edit (``preferred_username``, ``email`` or
``name`` can often be edited by the user at the provider, so a user could take another's name
and their workspace roles or platform-admin rights). An operator who names another claim must
be sure the provider does not let users change it.

Platform admins come from the provider's groups (``platform_admin_groups``), never from a name:
at each login a member of one of those groups is made a hub admin and put in the hub group
``PLATFORM_ADMIN_GROUP``, which holds the ``dsw-platform-admin`` role; a user who left those
groups loses both at their next login.

Who may log in: platform admins, and users who are members of at least one workspace after
step 3 (through the mapping, the YAML catalogue or an admin). Everyone else is refused with 403;
a refused user who exists in the hub (lost every mapping) is also removed from all groups, so
tokens issued earlier lose the workspace roles at once.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterable, Mapping

from oauthenticator.generic import GenericOAuthenticator
from sqlalchemy import select
from traitlets import Bool, Dict, Set, Unicode, default

from . import rbac
from .catalog import Catalog, load_catalog
from .catalog.db import AuditEvent, MemberChange, sessions
from .catalog.live import effective_catalog
from .catalog.models import USERNAME_PATTERN
from .roles import Role

# Highest first. The order of the issue: ops ranks above developer when both map to a workspace.
PRECEDENCE: tuple[Role, ...] = (Role.owner, Role.admin, Role.ops, Role.developer, Role.labeler, Role.visitor)
_RANK = {r: i for i, r in enumerate(PRECEDENCE)}
MAPPABLE = tuple(r for r in PRECEDENCE if r != Role.owner)
# the hub group that holds the dsw-platform-admin role with single sign-on (spawner_ext/hubconfig.py);
# workspace groups all start with "ws:", so no workspace can name it
PLATFORM_ADMIN_GROUP = "dsw:platform-admins"


class RoleMapError(ValueError):
    """A bad entry in ``workspace_role_map``; the message names the entry."""


def parse_role_map(role_map: Mapping[str, Iterable[str]], catalog: Catalog) -> dict[str, list[tuple[str, Role]]]:
    """Check every "workspace:role" entry against the catalogue; return group -> [(ws, role)].

    Raises RoleMapError listing every bad entry (group, entry and cause)."""
    problems: list[str] = []
    out: dict[str, list[tuple[str, Role]]] = {}
    if not isinstance(role_map, Mapping):
        raise RoleMapError(f"workspace_role_map must be an object of group -> list of 'workspace:role', "
                           f"got {type(role_map).__name__}")
    known = [w.id for w in catalog.workspaces]
    for group, entries in role_map.items():
        where = f"workspace_role_map[{group!r}]"
        if isinstance(entries, str):
            entries = [entries]
        if not isinstance(entries, (list, tuple)):
            problems.append(f"{where}: must be a list of 'workspace:role' strings, got {entries!r}")
            continue
        pairs = []
        for entry in entries:
            if not isinstance(entry, str) or entry.count(":") != 1:
                problems.append(f"{where}: {entry!r} is not 'workspace:role'")
                continue
            ws, role = (s.strip() for s in entry.split(":"))
            if ws not in known:
                problems.append(f"{where}: {entry!r}: unknown workspace {ws!r} (catalogue has: {', '.join(known)})")
                continue
            if role == Role.owner.value:
                problems.append(f"{where}: {entry!r}: an identity-provider group may not grant 'owner' "
                                f"(a workspace has one owner, named in the catalogue); use 'admin'")
                continue
            if role not in {r.value for r in MAPPABLE}:
                problems.append(f"{where}: {entry!r}: unknown role {role!r} "
                                f"(one of {', '.join(r.value for r in MAPPABLE)})")
                continue
            pairs.append((ws, Role(role)))
        out[group] = pairs
    if problems:
        raise RoleMapError("invalid DSWOAuthenticator.workspace_role_map:\n  " + "\n  ".join(problems))
    return out


def workspace_roles(idp_groups: Iterable[str], parsed_map: Mapping[str, list[tuple[str, Role]]]) -> dict[str, Role]:
    """The user's role per workspace from their identity-provider groups: highest role wins."""
    out: dict[str, Role] = {}
    for group in sorted(set(idp_groups)):
        for ws, role in parsed_map.get(group, ()):
            if ws not in out or _RANK[role] < _RANK[out[ws]]:
                out[ws] = role
    return out


def apply_sso_roles(session_factory, catalog: Catalog, username: str, wanted: Mapping[str, Role]) -> Catalog:
    """Write the user's sso memberships in ONE transaction; return the effective catalogue.

    Rows with source "admin" and YAML memberships win over the mapping and are never touched;
    this user's sso rows that no longer apply are deleted."""
    yaml_members = {w.id: w.members for w in catalog.workspaces}
    with session_factory() as session, session.begin():
        rows = {r.workspace: r for r in session.scalars(select(MemberChange).where(MemberChange.user == username))}
        def audit(action: str, ws: str, detail: str = "") -> None:
            session.add(AuditEvent(actor="sso", action=action, workspace=ws, target=username, outcome="ok",
                                   detail=(detail + "; " if detail else "") + "at login, from identity-provider groups"))

        for ws, row in rows.items():
            if row.source == "sso" and (ws not in wanted or username in yaml_members.get(ws, {})):
                session.delete(row)
                if ws not in wanted:
                    audit("remove-member", ws)
        for ws, role in wanted.items():
            if username in yaml_members.get(ws, {}):
                continue  # the catalogue decides
            row = rows.get(ws)
            if row is not None and row.source != "sso":
                continue  # an admin decided (including a removal)
            if row is None:
                session.add(MemberChange(workspace=ws, user=username, role=role.value, source="sso"))
                audit("set-member", ws, f"role={role.value}")
            elif row.role != role.value:
                row.role = role.value
                audit("set-member", ws, f"role={role.value}")
        session.flush()
        live = effective_catalog(catalog, session)
    return live


def hub_groups(catalog: Catalog, username: str) -> list[str]:
    """Exactly the JupyterHub groups the user belongs to in the (effective) catalogue."""
    return sorted(g for g, users in rbac.groups(catalog).items() if username in users)


def discover(issuer: str, timeout: float = 10) -> dict:
    """The provider's OpenID configuration (authorization, token and userinfo endpoints)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            doc = json.load(r)
    except Exception as exc:
        raise RuntimeError(f"OIDC issuer (DSW_OIDC_ISSUER): cannot read {url}: {exc}") from None
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if not doc.get(k)]
    if missing:
        raise RuntimeError(f"OIDC issuer (DSW_OIDC_ISSUER): {url} lacks {', '.join(missing)}")
    return doc


class DSWOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that maps identity-provider groups to DSW workspace roles."""

    workspace_role_map = Dict(
        config=True,
        help="""Identity-provider group -> list of "workspace:role" strings.

        Example: {"vision-devs": ["vision:developer"], "ml-leads": ["vision:admin", "nlp:admin"]}.
        Checked against the catalogue at startup (unknown workspace or role, or 'owner': refused,
        naming the entry). Several groups mapping to one workspace: the highest role wins
        (owner > admin > ops > developer > labeler > visitor).""",
    )
    issuer = Unicode(
        config=True,
        help="""OpenID Connect issuer URL. When set, the authorize, token and userinfo URLs are read
        from its discovery document when the hub starts the authenticator (not when the
        configuration file is read), so a configuration can be loaded without the provider.""",
    )
    state_db_url = Unicode(config=True, help="SQLAlchemy URL of the DSW state database (MemberChange rows).")
    catalog_path = Unicode(config=True, help="The catalogue YAML (workspaces and their YAML members).")

    manage_groups = Bool(True, config=True, help="The hub's groups follow the workspace roles at each login.")
    platform_admin_groups = Set(
        Unicode(), config=True,
        help="""Provider groups whose members are platform admins (hub admin and the dsw-platform-admin
        role through the hub group PLATFORM_ADMIN_GROUP), decided again at every login.""",
    )

    @default("scope")
    def _scope_default(self):
        return ["openid", "profile", "email"]

    @default("username_claim")
    def _username_claim_default(self):
        return "sub"  # stable; preferred_username/email are often user-editable

    @default("login_service")
    def _login_service_default(self):
        return "single sign-on"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.catalog_path or not self.state_db_url:
            raise ValueError("DSWOAuthenticator needs catalog_path and state_db_url")
        if self.issuer:
            oidc = discover(self.issuer)  # fails the hub's start naming the issuer
            self.authorize_url = oidc["authorization_endpoint"]
            self.token_url = oidc["token_endpoint"]
            self.userdata_url = oidc["userinfo_endpoint"]
        # fail at startup, naming the bad entry
        self._parsed_map = parse_role_map(self.workspace_role_map, load_catalog(self.catalog_path))

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        """Called by oauthenticator (manage_groups) right after update_auth_model: sync this
        user's sso memberships and return the JupyterHub groups they should be in."""
        idp_groups = await super().get_user_groups(auth_state)
        user_info = auth_state.get(self.user_auth_state_key) or {}
        username = self.normalize_username(self.user_info_to_username(user_info))
        wanted = workspace_roles(idp_groups, self._parsed_map)
        if wanted and not re.fullmatch(USERNAME_PATTERN, username):
            self.log.warning("SSO: %s cannot be a workspace member (names must match %s)", username, USERNAME_PATTERN)
            wanted = {}
        catalog = load_catalog(self.catalog_path)  # the file may have changed since startup
        live = await asyncio.to_thread(apply_sso_roles, sessions(self.state_db_url), catalog, username, wanted)
        groups = hub_groups(live, username)
        if set(idp_groups) & self.platform_admin_groups:
            groups.append(PLATFORM_ADMIN_GROUP)
        self.log.info("SSO login %s: provider groups %s -> mapped roles %s -> hub groups %s",
                      username, sorted(idp_groups), {w: r.value for w, r in wanted.items()}, groups)
        return set(groups)

    async def update_auth_model(self, auth_model):
        """Hub admin exactly when a provider group says so (True or False at every login: a user
        who left the admin groups stops being admin; a name never makes an admin)."""
        auth_model = await super().update_auth_model(auth_model)
        idp_groups = await GenericOAuthenticator.get_user_groups(self, auth_model["auth_state"])
        auth_model["admin"] = bool(set(idp_groups) & self.platform_admin_groups)
        return auth_model

    async def check_allowed(self, username, auth_model):
        """Platform admins, allowed_users/allowed_groups, and every workspace member."""
        if await super().check_allowed(username, auth_model):
            return True
        if auth_model and auth_model.get("groups"):
            return True
        self.log.warning("SSO: %s is in no workspace (no mapped provider group, not in the catalogue): refused",
                         username)
        self._strip_groups(username)
        return False

    def _strip_groups(self, username: str) -> None:
        """A refused login changes nothing in the hub, so a user who lost every mapping would keep
        the groups (and the roles they carry) of their last login for existing tokens: empty them."""
        db = getattr(self.parent, "db", None)
        if db is None:
            return
        from jupyterhub import orm

        user = orm.User.find(db, username)
        if user is not None and user.groups:
            self.log.info("SSO: removing refused user %s from %s", username, sorted(g.name for g in user.groups))
            user.groups = []
            db.commit()
