"""Load and check the catalogue file; every problem names file, path and cause."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .models import Catalog, Image


class CatalogError(ValueError):
    """All problems found in a catalogue file, each as (file, path, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{f}: {p}: {m}" if p else f"{f}: {m}" for f, p, m in problems]
        super().__init__("invalid catalogue:\n  " + "\n  ".join(lines))


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError([(str(path), "", f"cannot read: {exc.strerror}")]) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CatalogError([(str(path), where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None


def _merge_image_metadata(data: dict, path: Path) -> list[dict]:
    """Managed-image metadata (images/images.yaml) first, catalogue entries override by id."""
    ref = data.pop("image_metadata", None)
    images = data.get("images")
    if images is not None and not isinstance(images, list):
        if not ref:
            return images  # the model reports it ("images: Input should be a valid list")
        raise CatalogError([(str(path), "images", "must be a list of images")])
    images = images or []
    if not ref:
        return images
    if not isinstance(ref, str):
        raise CatalogError([(str(path), "image_metadata", "must be a file name (text), relative to the catalogue")])
    meta_path = (path.parent / ref).resolve()
    meta = _read_yaml(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        raise CatalogError([(str(meta_path), "images", "must be a list of images")])
    by_id: dict[str, dict] = {}
    for i, entry in enumerate(meta["images"]):
        try:
            by_id[entry["id"]] = Image.model_validate(entry).model_dump(mode="json")
        except (ValidationError, TypeError, KeyError) as exc:
            errs = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": "needs an id"}]
            raise CatalogError([(str(meta_path), _path(("images", i, *e["loc"])), e["msg"]) for e in errs]) from None
    for entry in images:
        if isinstance(entry, dict) and entry.get("id") in by_id:
            by_id[entry["id"]] = {**by_id[entry["id"]], **entry}
        else:
            by_id[f"__{len(by_id)}"] = entry
    return list(by_id.values())


def _cross_check(cat: Catalog) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for section in ("workspaces", "images", "instance_types", "resource_groups", "storage"):
        counts = Counter(item.id for item in getattr(cat, section))
        for index, item in enumerate(getattr(cat, section)):
            if counts[item.id] > 1:
                problems.append((f"{section}[{index}].id", f"duplicate id {item.id!r}"))
    ws_ids = {w.id for w in cat.workspaces}
    group_ids = {g.id for g in cat.resource_groups}
    type_ids = {t.id for t in cat.instance_types}
    for i, ws in enumerate(cat.workspaces):
        for j, gid in enumerate(ws.resource_groups):
            if gid not in group_ids:
                problems.append((f"workspaces[{i}].resource_groups[{j}]", f"unknown resource group {gid!r}"))
        for gid in ws.quotas:
            if gid not in ws.resource_groups:
                problems.append((f"workspaces[{i}].quotas.{gid}", f"{gid!r} is not one of the workspace's resource_groups"))
    for g_index, g in enumerate(cat.resource_groups):
        total = [(w.quotas[g.id]) for w in cat.workspaces if g.id in w.quotas]
        for dim in ("cpu", "memory", "gpu"):
            asked = sum(getattr(q, dim) for q in total)
            if not g.oversell and asked > getattr(g.capacity, dim):
                problems.append((f"resource_groups[{g_index}].capacity.{dim}",
                                 f"workspace quotas add up to {asked} but the group has {getattr(g.capacity, dim)} "
                                 "(set oversell: true to allow)"))
    for i, img in enumerate(cat.images):
        for j, wid in enumerate(img.workspaces):
            if wid != "*" and wid not in ws_ids:
                problems.append((f"images[{i}].workspaces[{j}]", f"unknown workspace {wid!r}"))
    problems += _storage_checks(cat, ws_ids)
    problems += _name_checks(cat)
    for i, t in enumerate(cat.instance_types):
        if t.gpu and not t.gpu_type:
            problems.append((f"instance_types[{i}].gpu_type", "a GPU instance type needs a gpu_type"))
        if not t.gpu and t.gpu_type:
            problems.append((f"instance_types[{i}].gpu_type", "gpu_type is set but gpu is 0"))
    for i, g in enumerate(cat.resource_groups):
        for j, tid in enumerate(g.instance_types):
            t = cat.instance_type(tid)
            if tid not in type_ids:
                problems.append((f"resource_groups[{i}].instance_types[{j}]", f"unknown instance type {tid!r}"))
            elif t.gpu > g.capacity.gpu:
                problems.append((f"resource_groups[{i}].instance_types[{j}]",
                                 f"{tid!r} needs {t.gpu} GPU(s) but the group has {g.capacity.gpu}"))
    return problems


def _storage_checks(cat: Catalog, ws_ids: set[str]) -> list[tuple[str, str]]:
    """Storage entries name known workspaces, and the entries one workspace sees have default
    mount paths that do not overlap (else choosing them together would always be refused)."""
    from ..storage.paths import overlaps

    problems: list[tuple[str, str]] = []
    for i, st in enumerate(cat.storage):
        for j, wid in enumerate(st.workspaces):
            if wid != "*" and wid not in ws_ids:
                problems.append((f"storage[{i}].workspaces[{j}]", f"unknown workspace {wid!r}"))
    for i, st in enumerate(cat.storage):
        for k in range(i):
            other = cat.storage[k]
            shared = [w for w in ws_ids if st.visible_in(w) and other.visible_in(w)]
            if shared and overlaps(st.mount_path, other.mount_path):
                problems.append((f"storage[{i}].mount_path",
                                 f"{st.mount_path!r} overlaps {other.mount_path!r} of storage {other.id!r}, "
                                 f"both offered to workspace {sorted(shared)[0]!r}"))
    return problems


def _name_checks(cat: Catalog) -> list[tuple[str, str]]:
    """Every hub group and role the catalogue makes (rbac) has one owner: a workspace whose
    names equal another's, or a fixed role's, would hand that workspace's members the other's
    permissions (or stop the hub: JupyterHub refuses a role defined twice)."""
    from .. import rbac
    from ..roles import Role

    owner: dict[str, str] = {f"role {r}": "a fixed role" for r in rbac.FIXED_ROLES}
    problems: list[tuple[str, str]] = []
    for i, ws in enumerate(cat.workspaces):
        names = {f"group {rbac.ws_group(ws.id)}", f"group {rbac.ws_builders_group(ws.id)}",
                 *(f"group {rbac.ws_role_group(ws.id, r)}" for r in Role),
                 *(f"role {rbac.ws_role_name(ws.id, r)}" for r in Role)}
        for name in sorted(names):
            if name in owner:
                problems.append((f"workspaces[{i}].id", f"workspace {ws.id!r} would make hub {name}, "
                                                        f"which is already {owner[name]}; choose another id"))
            else:
                owner[name] = f"workspace {ws.id!r}'s"
    return problems


def load_catalog(path: str | Path) -> Catalog:
    """Parse, validate and cross-check a catalogue file; raise CatalogError listing every problem."""
    path = Path(path).resolve()
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise CatalogError([(str(path), "", "the catalogue must be a mapping of sections")])
    data = dict(data)
    data["images"] = _merge_image_metadata(data, path)
    try:
        cat = Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError([(str(path), _path(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    problems = _cross_check(cat)
    if problems:
        raise CatalogError([(str(path), p, m) for p, m in problems])
    return cat
