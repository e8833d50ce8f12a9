"""The roles table (roles.py) expressed as JupyterHub RBAC: groups, roles, custom scopes.

Pure: effective catalogue in, JupyterHub configuration out. JupyterHub enforces the
result for its own REST API and proxy URLs; the DSW service checks the custom scopes
it finds on the caller's token, so every decision comes from the hub's RBAC.
"""

from __future__ import annotations

from .catalog.models import Catalog
from .roles import PERMISSIONS, Action, Role

PLATFORM_ACTIONS = {
    "allocate": "define resource-group allocations for workspaces",
    "audit": "read the audit log",
}


# Names are injective: workspace ids hold only [a-z0-9-] (catalog.models.ID_PATTERN), so a
# separator they cannot contain keeps workspace "vision-admin" from naming vision's admin
# group. Groups use ':' (JupyterHub puts no rule on group names); roles use '.' (JupyterHub's
# role-name rule allows [a-z0-9-_~.]), and no fixed role name (user, admin, dsw-platform-admin,
# dsw-service, idle-culler) contains a '.', so a workspace called "platform" collides with none.
GROUP_SEP, ROLE_SEP = ":", "."
FIXED_ROLES = ("user", "admin", "dsw-platform-admin", "dsw-service", "idle-culler")


def ws_group(ws: str) -> str:
    """Every member of the workspace: the target of ``!group=`` filters."""
    return f"ws{GROUP_SEP}{ws}"


def ws_role_group(ws: str, role: Role | str) -> str:
    return f"ws{GROUP_SEP}{ws}{GROUP_SEP}{Role(role).value}"


def ws_builders_group(ws: str) -> str:
    """Members whose role may use instances: the only members instances are shared with."""
    return f"ws{GROUP_SEP}{ws}{GROUP_SEP}builders"


def ws_role_name(ws: str, role: Role | str) -> str:
    return f"ws{ROLE_SEP}{ws}{ROLE_SEP}{Role(role).value}"


def scope(action: Action | str, ws: str | None = None) -> str:
    name = action.value if isinstance(action, Action) else action
    return f"custom:dsw:{name}" + (f"!group={ws_group(ws)}" if ws else "")


def custom_scopes() -> dict[str, dict]:
    from .roles import ACTION_TEXT
    out = {scope(a): {"description": f"DSW: {text}"} for a, text in ACTION_TEXT.items()}
    out.update({scope(a): {"description": f"DSW: {text}"} for a, text in PLATFORM_ACTIONS.items()})
    return out


# The default "user" role without servers!user: whether a member may run instances
# depends on the workspace role, so that scope comes from the workspace roles below.
BASE_USER_SCOPES = ["read:users!user", "users:activity!user", "tokens!user", "read:tokens!user",
                    "read:servers!user", "read:groups!user", "access:services!service=dsw"]


def groups(catalog: Catalog) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ws in catalog.workspaces:
        out[ws_group(ws.id)] = sorted(ws.members)
        out[ws_builders_group(ws.id)] = sorted(u for u, r in ws.members.items() if r in PERMISSIONS[Action.use_own])
        for role in Role:
            out[ws_role_group(ws.id, role)] = sorted(u for u, r in ws.members.items() if r == role)
    return out


def role_scopes(ws: str, role: Role) -> list[str]:
    allowed = [a for a in Action if role in PERMISSIONS[a]]
    scopes = [scope(a, ws) for a in allowed]
    members = f"!group={ws_group(ws)}"
    scopes += [f"read:users:name{members}", f"read:servers{members}", f"read:groups!group={ws_group(ws)}"]
    if Action.use_own in allowed:
        # own servers only. No server scope on other members (a group filter selects users,
        # not servers, and JupyterHub passes the caller's options to a spawn): stopping or
        # restarting another member's instance goes through the DSW service, which checks the
        # instance's own workspace. No shares scope either (it would allow sharing with anyone
        # and share codes): the service shares with the workspace's builders only.
        scopes += ["servers!user", "access:servers!user"]
    return scopes


def roles(catalog: Catalog, service: str = "dsw") -> list[dict]:
    out = [{"name": "user", "description": "Every logged-in user; workspace roles add the rest",
            "scopes": BASE_USER_SCOPES}]
    for ws in catalog.workspaces:
        for role in Role:
            out.append({
                "name": ws_role_name(ws.id, role),
                "description": f"{role.value} of workspace {ws.id}",
                "scopes": role_scopes(ws.id, role),
                "groups": [ws_role_group(ws.id, role)],
            })
    out.append({
        "name": "dsw-platform-admin", "description": "Platform admins: allocations, audit, every workspace",
        "scopes": [scope(a) for a in Action] + [scope(a) for a in PLATFORM_ACTIONS],
        "users": list(catalog.platform_admins),
    })
    out.append({
        "name": "dsw-service", "description": "The DSW service's own token",
        "scopes": ["admin:users", "admin:groups", "list:users", "read:users", "list:groups", "read:groups",
                   "servers", "read:servers", "shares"],
        "services": [service],
    })
    return out
