"""Workspace roles and what each may do: the one table that drives JupyterHub
RBAC, the service's checks, the spawn path and the README."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    developer = "developer"
    ops = "ops"
    labeler = "labeler"
    visitor = "visitor"


class Action(StrEnum):
    view = "view"                        # images, types, groups, quotas, usage
    list_instances = "list-instances"
    use_own = "use-own-instances"        # create/start/stop/open own instances
    open_shared = "open-shared-instances"
    manage_any = "manage-any-instance"   # stop/restart any instance of the workspace
    save_image = "save-image"
    publish_image = "publish-image"
    free_image = "launch-free-form-image"
    manage_members = "manage-members"
    set_member_quota = "set-member-quota"
    set_policy = "set-lifecycle-policy"  # the workspace's idle limit


ACTION_TEXT: dict[Action, str] = {
    Action.view: "see the workspace's images, instance types, resource groups, quotas and usage",
    Action.list_instances: "list the workspace's instances",
    Action.use_own: "create, start, stop, open own instances, schedule their stop",
    Action.open_shared: "open another member's instance shared with the workspace",
    Action.manage_any: "stop, restart or schedule the stop of any instance of the workspace",
    Action.save_image: "save own instance as an image",
    Action.publish_image: "publish an image to the workspace, delete workspace images",
    Action.free_image: "launch from a free-form image reference (allowlisted registries)",
    Action.manage_members: "add/remove members, change roles",
    Action.set_member_quota: "set member quotas inside the workspace",
    Action.set_policy: "set the workspace's idle shutdown limit",
}

_ALL = set(Role)
_USERS = {Role.owner, Role.admin, Role.developer, Role.ops}
_MANAGERS = {Role.owner, Role.admin}

PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.view: frozenset(_ALL),
    Action.list_instances: frozenset(_ALL),
    Action.use_own: frozenset(_USERS),
    Action.open_shared: frozenset(_USERS),
    Action.manage_any: frozenset({Role.owner, Role.admin, Role.ops}),
    Action.save_image: frozenset(_USERS),
    Action.publish_image: frozenset(_MANAGERS),
    Action.free_image: frozenset(_MANAGERS),
    Action.manage_members: frozenset(_MANAGERS),
    Action.set_member_quota: frozenset(_MANAGERS),
    Action.set_policy: frozenset(_MANAGERS),
}


def allowed(role: Role | str, action: Action) -> bool:
    return Role(role) in PERMISSIONS[action]


def markdown_table() -> str:
    """The README's table, generated from PERMISSIONS so the two cannot drift."""
    roles = list(Role)
    lines = ["| action | " + " | ".join(r.value for r in roles) + " |",
             "|---|" + "---|" * len(roles)]
    for action, text in ACTION_TEXT.items():
        cells = ["yes" if r in PERMISSIONS[action] else "no" for r in roles]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
