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


def ws_group(ws: str) -> str:
    """Every member of the workspace: the target of ``!group=`` filters."""
    return f"ws-{ws}"


def ws_role_group(ws: str, role: Role | str) -> str:
    return f"ws-{ws}-{Role(role).value}"


def ws_builders_group(ws: str) -> str:
    """Members whose role may use instances: instances are shared with this group."""
    return f"ws-{ws}-builders"


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
        scopes += ["servers!user", "access:servers!user", "shares!user", "read:shares!user",
                   f"read:groups:name!group={ws_builders_group(ws)}"]  # share with the workspace
    if Action.manage_any in allowed:
        scopes += [f"servers{members}"]  # stop/restart, not open (no access:servers)
    return scopes


def roles(catalog: Catalog, service: str = "dsw") -> list[dict]:
    out = [{"name": "user", "description": "Every logged-in user; workspace roles add the rest",
            "scopes": BASE_USER_SCOPES}]
    for ws in catalog.workspaces:
        for role in Role:
            out.append({
                "name": f"dsw-{ws.id}-{role.value}",
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
