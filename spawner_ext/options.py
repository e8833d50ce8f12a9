"""user_options (spawn form or REST body) -> InstanceSpec. Pure: reads only the catalogue.

Every refusal is an ``OptionsError`` naming the field, with the HTTP status the hub
returns (400 for bad values, 403 for what the member's role forbids).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from . import policy
from .catalog.models import Accelerator, Catalog, Image, Kind
from .errors import OptionsError
from .naming import home_volume_name, label_value, server_label, server_slug, slug
from .roles import Action, allowed
from .spec import HOME, START_URL, InstanceSpec, Mount
from .storage.mounts import MountError, resolve_mounts

KNOWN_OPTIONS = {"workspace", "image", "image_ref", "instance_type", "resource_group", "kind", "mounts",
                 "idle_minutes", "stop_at", "stop_in_hours", "startup_script"}




def _text(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, list) and len(value) == 1:  # form fields arrive as lists
        value = value[0]
    if not isinstance(value, str):
        raise OptionsError(400, key, f"must be a string, got {type(value).__name__}")
    return value.strip()


def _pick_workspace(catalog: Catalog, user: str, wanted: str | None) -> tuple[str, str]:
    memberships = catalog.memberships(user)
    if wanted is None:
        if len(memberships) == 1:
            wanted = next(iter(memberships))
        elif not memberships:
            raise OptionsError(403, "workspace", f"user {user!r} is not a member of any workspace")
        else:
            raise OptionsError(400, "workspace", f"choose one of: {', '.join(sorted(memberships))}")
    if catalog.workspace(wanted) is None:
        raise OptionsError(400, "workspace", f"unknown workspace {wanted!r}")
    if wanted not in memberships:
        raise OptionsError(403, "workspace", f"user {user!r} is not a member of workspace {wanted!r}")
    return wanted, memberships[wanted]


def _pick_image(catalog: Catalog, ws: str, role: str, kind: Kind,
                image_id: str | None, image_ref: str | None) -> Image:
    if image_ref is not None:
        if image_id is not None:
            raise OptionsError(400, "image_ref", "give either image or image_ref, not both")
        if not allowed(role, Action.free_image):
            raise OptionsError(403, "image_ref", f"role {role} may not launch free-form images in {ws!r}")
        allow = catalog.workspace(ws).registry_allowlist
        if not any(image_ref.startswith(prefix.rstrip("/") + "/") for prefix in allow):
            raise OptionsError(403, "image_ref", f"registry of {image_ref!r} is not on workspace {ws!r}'s allowlist")
        return Image(id="custom", display_name=image_ref, image=image_ref, source="custom")
    visible = catalog.images_for(ws)
    if image_id is None:
        choices = [i for i in visible if kind in i.kinds and i.accelerator == Accelerator.cpu] or visible
        if not choices:
            raise OptionsError(400, "image", f"workspace {ws!r} has no images")
        return choices[0]
    image = catalog.image(image_id)
    if image is None or not image.visible_in(ws):
        raise OptionsError(400, "image", f"workspace {ws!r} has no image {image_id!r}")
    return image


def resolve(catalog: Catalog, user: str, server: str, options: Mapping[str, Any],
            idle: policy.IdleBounds = policy.IdleBounds(), now: dt.datetime | None = None) -> InstanceSpec:
    """Validate ``options`` for ``user`` and build the spec; raise OptionsError on any problem.

    ``idle`` is the platform's idle policy (hub settings); the workspace's bound is in the
    catalogue (``Workspace.idle_max_minutes``, run-time changes applied by the live catalogue)."""
    if not isinstance(options, Mapping):
        raise OptionsError(400, "options", "must be a JSON object")
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise OptionsError(400, unknown[0], f"unknown option (known: {', '.join(sorted(KNOWN_OPTIONS))})")

    ws, role = _pick_workspace(catalog, user, _text(options, "workspace"))
    if not allowed(role, Action.use_own):
        raise OptionsError(403, "workspace", f"role {role} in workspace {ws!r} may not create instances")

    kind_text = _text(options, "kind") or Kind.notebook.value
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise OptionsError(400, "kind", f"unknown kind {kind_text!r} (one of: {', '.join(k.value for k in Kind)})") from None

    image = _pick_image(catalog, ws, role, kind, _text(options, "image"), _text(options, "image_ref"))
    if kind not in image.kinds:
        raise OptionsError(400, "kind", f"image {image.id!r} does not support {kind.value}")

    groups = catalog.groups_for(ws)
    group_id = _text(options, "resource_group")
    if group_id is None:
        if not groups:
            raise OptionsError(400, "resource_group", f"workspace {ws!r} has no resource groups")
        group = groups[0]
    else:
        group = next((g for g in groups if g.id == group_id), None)
        if group is None:
            raise OptionsError(400, "resource_group", f"workspace {ws!r} has no resource group {group_id!r}")

    types = catalog.types_for_group(group)
    type_id = _text(options, "instance_type")
    if type_id is None:
        fitting = [t for t in types if (t.gpu > 0) == (image.accelerator == Accelerator.gpu)] or types
        if not fitting:
            raise OptionsError(400, "instance_type", f"resource group {group.id!r} offers no instance types")
        itype = fitting[0]
    else:
        itype = catalog.instance_type(type_id)
        if itype is None:
            raise OptionsError(400, "instance_type", f"unknown instance type {type_id!r}")
        if itype not in types:
            raise OptionsError(400, "instance_type", f"instance type {type_id!r} cannot run in resource group {group.id!r}")
    if image.accelerator == Accelerator.gpu and itype.gpu == 0:
        raise OptionsError(400, "instance_type", f"image {image.id!r} needs a GPU but {itype.id!r} has none")

    try:
        mounts = resolve_mounts(catalog, ws, options.get("mounts"), user_dir=slug(user),
                                server_dir=server_slug(server))
    except MountError as exc:
        raise OptionsError(400, exc.field, exc.message) from None

    workspace_max = catalog.workspace(ws).idle_max_minutes
    if workspace_max is not None:
        workspace_max = min(workspace_max, idle.max_minutes)
    idle_minutes = policy.effective_idle(options.get("idle_minutes"), workspace_max, idle)
    stop_at = None
    if options.get("stop_at") not in (None, "") or options.get("stop_in_hours") not in (None, ""):
        stop_at = policy.stop_time(at=options.get("stop_at"), in_hours=options.get("stop_in_hours"), now=now)
    script = policy.startup_script(options.get("startup_script"))

    labels = {
        "dsw/user": label_value(user),
        "dsw/server": server_label(server),
        "dsw/workspace": ws,
        "dsw/kind": kind.value,
        "dsw/resource-group": group.id,
        "dsw/instance-type": itype.id,
        "dsw/image": image.id,
    }
    env = {
        "DSW_WORKSPACE": ws,
        "DSW_INSTANCE_KIND": kind.value,
        "DSW_RESOURCE_GROUP": group.id,
        "DSW_INSTANCE_TYPE": itype.id,
        "DSW_IMAGE": image.id,
        "CODE_WORKINGDIR": HOME,
    }
    return InstanceSpec(
        user=user, server=server, workspace=ws, kind=kind, start_url=START_URL[kind],
        image_id=image.id, image=image.image, pull_secret=image.pull_secret,
        instance_type=itype.id, cpu=itype.cpu, memory=itype.memory, gpu=itype.gpu, gpu_type=itype.gpu_type,
        resource_group=group.id, node_selector=dict(group.node_selector),
        tolerations=tuple(t.model_dump(exclude_none=True) for t in group.tolerations),
        priority_class=group.priority_class, labels=labels, env=env,
        home=Mount(type="volume", source=home_volume_name(ws, user), mount_path=HOME, name="home"),
        mounts=mounts, idle_minutes=idle_minutes, stop_at=stop_at, startup_script=script,
    )
