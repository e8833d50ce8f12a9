"""The catalogue side of spawning: the catalogue and state-database traits, the spawn form,
``user_options`` -> InstanceSpec and quota admission (refusals become HTTP errors).
The sequence that uses them is ``lifecycle.LifecycleMixin``; the service imports
``cached_catalog`` and ``default_state_db_url`` from here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import jinja2
from tornado import web
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

from . import policy, quota
from .catalog import Catalog, load_catalog
from .catalog.db import sessions
from .catalog.live import effective_catalog
from .catalog.models import Kind
from .options import OptionsError, resolve
from .resources import Resources
from .spec import InstanceSpec


def default_state_db_url() -> str:
    state = os.environ.get("DSW_STATE", "/var/lib/dsw-hub")
    return os.environ.get("DSW_STATE_DB_URL", f"sqlite:///{state}/dsw.sqlite")

_cache: dict[str, tuple[float, Catalog]] = {}
_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("spawner_ext", "templates"), autoescape=True
)


def cached_catalog(path: str) -> Catalog:
    """Load once per file change: editing the catalogue takes effect at the next spawn."""
    mtime = os.stat(path).st_mtime
    hit = _cache.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    catalog = load_catalog(path)
    _cache[path] = (mtime, catalog)
    return catalog


class CatalogSpawnerMixin(LoggingConfigurable):
    """Mix into a JupyterHub Spawner: catalogue-driven form and options -> spec."""

    catalog_path = Unicode(
        os.environ.get("DSW_CATALOG", str(Path(__file__).parent.parent / "hub_config" / "catalog.yaml")),
        config=True,
        help="Catalogue YAML: workspaces, members, images, instance types, resource groups.",
    )

    state_db_url = Unicode(
        config=True,
        help="SQLAlchemy URL of DSW's run-time state (membership changes, allocations, quota "
             "reservations, audit). Default: $DSW_STATE_DB_URL, else sqlite in $DSW_STATE.",
    )

    idle_default_minutes = Float(
        0, config=True,
        help="Platform idle policy: minutes an instance may stay idle when neither its member nor its "
             "workspace chose (0: never stopped for idleness). Set by hubconfig from DSW_IDLE_DEFAULT_MINUTES.")
    idle_max_minutes = Float(
        24 * 60, config=True,
        help="Platform idle policy: the longest idle time a workspace may allow (its owners/admins set "
             "theirs within it). Set by hubconfig from DSW_IDLE_MAX_MINUTES.")

    idle_min_minutes = Float(
        0, config=True,
        help="Platform idle policy: the shortest idle limit anyone may choose (twice the culler's check "
             "period, which is also how often instances report activity). Set by hubconfig.")

    @property
    def idle_bounds(self) -> policy.IdleBounds:
        return policy.IdleBounds(default_minutes=self.idle_default_minutes, max_minutes=self.idle_max_minutes,
                                 min_minutes=self.idle_min_minutes)

    @default("state_db_url")
    def _default_state_db_url(self):
        return default_state_db_url()

    @property
    def sessions(self):
        return sessions(self.state_db_url)

    @property
    def catalog(self) -> Catalog:
        """The YAML catalogue with run-time membership changes and this user's saved images."""
        with self.sessions() as s:
            return effective_catalog(cached_catalog(self.catalog_path), s, viewer=self.user.name)

    async def _options_form(self, spawner) -> str:
        """The spawn form (JupyterHub awaits it): database reads run off the event loop."""
        return await asyncio.to_thread(self.render_options_form)

    def render_options_form(self) -> str:
        """What the member may choose, with what is free now where the choice is made: per
        resource group the free part of each limit (group, workspace allocation, member cap), and
        instance types that cannot fit marked and not selectable. Blocking: reads the state DB."""
        bounds = self.idle_bounds
        with self.sessions() as s:
            catalog = effective_catalog(cached_catalog(self.catalog_path), s, viewer=self.user.name)
            workspaces = []
            for wid, role in sorted(catalog.memberships(self.user.name).items()):
                ws = catalog.workspace(wid)
                groups = []
                for g in catalog.groups_for(wid):
                    levels = quota.headroom(s, catalog, wid, self.user.name, g.id)
                    types = []
                    for t in catalog.types_for_group(g):
                        blocking = next((lv for lv in levels if not lv.admits(Resources.of(t))), None)
                        types.append({"type": t, "blocking": blocking})
                    groups.append({"group": g, "levels": levels, "types": types})
                ws_max = ws.idle_max_minutes if ws.idle_max_minutes is None else min(ws.idle_max_minutes,
                                                                                     bounds.max_minutes)
                workspaces.append({
                    "ws": ws, "role": role.value, "images": catalog.images_for(wid), "groups": groups,
                    "storage": catalog.storage_for(wid),
                    "idle_max": ws_max if ws_max is not None else bounds.max_minutes,
                    "idle_default": policy.effective_idle(None, ws_max, bounds),
                })
        return _templates.get_template("spawn_form.html").render(
            workspaces=workspaces, kinds=list(Kind), user=self.user.name,
            script_max=policy.STARTUP_SCRIPT_MAX_BYTES, stop_max_hours=policy.MAX_STOP_HOURS,
            idle_min=bounds.min_minutes,
        )

    def options_from_form(self, formdata: dict) -> dict:
        """Form lists -> plain strings; validation happens in ``resolve`` for form and API alike."""
        return {k: v[0] if isinstance(v, list) and len(v) == 1 else v
                for k, v in formdata.items() if v not in ([""], "", None)}

    def resolve_spec(self) -> InstanceSpec:
        """Blocking (reads the state database): call it off the event loop."""
        try:
            return resolve(self.catalog, self.user.name, self.name or "", self.user_options or {},
                           idle=self.idle_bounds)
        except OptionsError as exc:
            raise web.HTTPError(exc.status, log_message=str(exc), reason=None) from None

    def admit(self, spec: InstanceSpec) -> None:
        """Reserve quota for the spec (blocking; call it off the event loop)."""
        try:
            # capacities and YAML quotas only: the YAML catalogue, no second database read
            quota.admit(self.sessions, cached_catalog(self.catalog_path), spec)
        except quota.QuotaExceeded as exc:
            raise web.HTTPError(403, log_message=str(exc), reason=None) from None
