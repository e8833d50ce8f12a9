"""The DSW service: REST API under /services/dsw/api/v1/ (OpenAPI from the code) and pages.

Run by JupyterHub as a managed service (``python -m spawner_ext.service``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select

from ..catalog.db import AuditEvent, sessions
from ..catalog.live import allocation
from ..catalog.models import Capacity
from ..catalog_spawner import cached_catalog, default_state_db_url
from ..quantities import format_memory
from ..quota import usage
from .. import snapshots
from ..roles import ACTION_TEXT, Action, Role
from . import hub_api, ops
from .auth import COOKIE, STATE_COOKIE, NeedsLogin, can, current_user, hub_auth, is_platform_admin, login_url

PREFIX = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dsw/")
API = PREFIX + "api/v1"
CSRF_COOKIE = "dsw-csrf"
templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
templates.filters["mem"] = lambda b: format_memory(int(b)) if b else "0"


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class SaveImageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None  # only the caller's own instance: omit, or the caller's name
    server: str              # the instance's server name ("" is the default server)
    name: str                # 1-30 of a-z, 0-9, '-'


def _engine(fn, *args, **kwargs):
    """One blocking engine call sequence on its own client (run it in a thread)."""
    cli = snapshots.client()
    try:
        return fn(cli, *args, **kwargs)
    finally:
        cli.close()


class Settings:
    catalog_path = os.environ.get("DSW_CATALOG", "")
    db_url = os.environ.get("DSW_STATE_DB_URL") or default_state_db_url()


@contextmanager
def context(actor: str):
    with sessions(Settings.db_url)() as s, s.begin():
        yield ops.Ctx(cached_catalog(Settings.catalog_path), s, actor)


def actor_role(ctx: ops.Ctx, user: dict, ws: str) -> str | None:
    if is_platform_admin(user):
        return "platform"
    w = ctx.catalog.workspace(ws)
    return w.members.get(user["name"]) if w else None


@contextmanager
def attempt(user: dict, action: str, ws: str, target: str):
    """A change in one transaction; a refusal rolls it back, then is audited on its own."""
    try:
        with context(user["name"]) as ctx:
            yield ctx
    except ops.OpError as exc:
        with context(user["name"]) as ctx:
            ctx.audit(action, ws, target, "refused", exc.message)
        raise


def require(user: dict, action: Action, ws: str, what: str) -> None:
    """Refuse (and audit privileged refusals) unless the caller's scopes allow ``action``."""
    if can(user, action, ws):
        return
    with context(user["name"]) as ctx:
        exists = ctx.catalog.workspace(ws) is not None
        if exists and action not in (Action.view, Action.list_instances):
            ctx.audit(action.value, ws, what, "refused", f"{user['name']} lacks {action.value} in {ws}")
    if not exists:
        raise HTTPException(404, f"unknown workspace {ws!r}")
    raise HTTPException(403, f"{user['name']} may not {ACTION_TEXT[action]} in workspace {ws}")


async def reconcile_once() -> None:
    """Bring members added outside the service (SSO logins, catalogue edits) into the hub's
    workspace groups and the workspace shares. Add-only, from a fresh snapshot per workspace:
    removals are made by the change that removes (service or SSO login), and a pass that
    races such a change must not undo it."""
    with context("reconcile") as ctx:
        workspaces = [w.id for w in ctx.catalog.workspaces]
    for ws in workspaces:
        with context("reconcile") as ctx:
            cat, shared = ctx.catalog, ops.shares(ctx.session, ws)
        await hub_api.sync_groups(cat, ws, remove=False)
        if shared:
            await hub_api.sync_shares(cat, shared, ws, revoke=False)


async def _reconcile_forever(every: float) -> None:
    import logging
    log = logging.getLogger("dsw.reconcile")
    while True:
        try:
            await reconcile_once()
        except Exception:  # keep reconciling; the next round may succeed
            log.exception("reconciling groups and shares failed")
        await asyncio.sleep(every)


@asynccontextmanager
async def lifespan(app: FastAPI):
    every = float(os.environ.get("DSW_RECONCILE_SECONDS", "60"))
    task = asyncio.create_task(_reconcile_forever(every)) if every > 0 else None
    yield
    if task:
        task.cancel()


def create_app() -> FastAPI:
    app = FastAPI(title="DSW Hub service", version="1", openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs",
                  lifespan=lifespan,
                  redoc_url=None)
    api = APIRouter(prefix=API)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    @app.exception_handler(ops.OpError)
    async def _op_error(request: Request, exc: ops.OpError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(NeedsLogin)
    async def _login(request: Request, exc: NeedsLogin):
        url, state = login_url(request)
        resp = RedirectResponse(url, status_code=302)
        resp.set_cookie(STATE_COOKIE, f"{state}|{exc.url}", httponly=True, samesite="lax", path=PREFIX, max_age=600)
        return resp

    # --- API -----------------------------------------------------------------------
    @api.get("/workspaces", summary="Workspaces the caller can see")
    async def list_workspaces(user: dict = Depends(current_user)):
        with context(user["name"]) as ctx:
            return [{"id": w.id, "display_name": w.display_name, "role": w.members.get(user["name"])}
                    for w in ctx.catalog.workspaces if can(user, Action.view, w.id)]

    @api.get("/workspaces/{ws}", summary="Members, images, instance types, quotas and usage")
    async def get_workspace(ws: str, user: dict = Depends(current_user)):
        require(user, Action.view, ws, ws)
        with context(user["name"]) as ctx:
            return ops.overview(ctx, ws)

    @api.get("/workspaces/{ws}/instances", summary="The workspace's instances")
    async def list_instances(ws: str, user: dict = Depends(current_user)):
        require(user, Action.list_instances, ws, ws)
        with context(user["name"]) as ctx:
            rows = ops.instances(ctx, ws)
        states = await hub_api.server_states({r["user"] for r in rows})
        for r in rows:
            r["state"] = states.get((r["user"], r["server"]), "stopped")
        return rows

    @api.post("/workspaces/{ws}/instances/{owner}/stop", summary="Stop an instance (server '' is the default)")
    async def stop_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        action = Action.use_own if owner == user["name"] else Action.manage_any
        require(user, action, ws, f"{owner}/{server}")
        with context(user["name"]) as ctx:
            if ops.instance_workspace(ctx.session, owner, server) != ws:
                raise HTTPException(404, f"no running instance {owner}/{server} in workspace {ws}")
            ctx.audit("stop-instance", ws, f"{owner}/{server}", "ok")
        status = await hub_api.stop_server(owner, server)
        return {"stopping": f"{owner}/{server}", "hub_status": status}

    @api.post("/workspaces/{ws}/instances/{owner}/share", summary="Share an own instance with the workspace")
    async def share_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        if owner != user["name"]:
            raise HTTPException(403, "only an instance's creator can share it")
        require(user, Action.use_own, ws, f"{owner}/{server}")
        with context(user["name"]) as ctx:
            ops.share(ctx, ws, owner, server)
            cat = ctx.catalog
        await hub_api.sync_shares(cat, [(owner, server)], ws)
        return {"shared": f"{owner}/{server}", "workspace": ws}

    @api.delete("/workspaces/{ws}/instances/{owner}/share", summary="Stop sharing an own instance")
    async def unshare_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        if owner != user["name"]:
            raise HTTPException(403, "only an instance's creator can stop sharing it")
        with context(user["name"]) as ctx:
            ops.unshare(ctx, ws, owner, server)
        await hub_api.revoke_shares(owner, server)
        return {"unshared": f"{owner}/{server}", "workspace": ws}

    @api.get("/workspaces/{ws}/images", summary="Saved images: published ones and the caller's own")
    async def list_images(ws: str, user: dict = Depends(current_user)):
        require(user, Action.view, ws, ws)
        with context(user["name"]) as ctx:
            return ops.saved_images(ctx, ws, all_private=can(user, Action.publish_image, ws))

    @api.post("/workspaces/{ws}/images", status_code=201, summary="Save an own running instance as an image")
    async def save_image(ws: str, body: SaveImageBody, user: dict = Depends(current_user)):
        return await _save_image(user, ws, body.user, body.server, body.name)

    @api.post("/workspaces/{ws}/images/{image_id}/publish", summary="Publish a saved image to the workspace")
    async def publish_image(ws: str, image_id: str, user: dict = Depends(current_user)):
        require(user, Action.publish_image, ws, image_id)
        with attempt(user, "publish-image", ws, image_id) as ctx:
            row = ops.publish_image(ctx, ws, image_id)
            ctx.audit("publish-image", ws, image_id, "ok", row["image"])
        return row

    @api.delete("/workspaces/{ws}/images/{image_id}", summary="Delete a saved image (row, local tag, registry)")
    async def delete_image(ws: str, image_id: str, user: dict = Depends(current_user)):
        return await _delete_image(user, ws, image_id)

    @api.put("/workspaces/{ws}/members/{member}", summary="Add a member or change their role")
    async def put_member(ws: str, member: str, body: MemberBody, user: dict = Depends(current_user)):
        require(user, Action.manage_members, ws, member)
        with attempt(user, "set-member", ws, member) as ctx:
            ops.set_member(ctx, ws, member, body.role, actor_role=actor_role(ctx, user, ws))
            ctx.audit("set-member", ws, member, "ok", f"role={body.role.value}")
            cat, shared = ctx.catalog, ops.shares(ctx.session, ws)
        await hub_api.sync_groups(cat, ws)
        await hub_api.sync_shares(cat, shared, ws)
        return {"workspace": ws, "user": member, "role": body.role.value}

    @api.delete("/workspaces/{ws}/members/{member}", summary="Remove a member")
    async def delete_member(ws: str, member: str, user: dict = Depends(current_user)):
        require(user, Action.manage_members, ws, member)
        with attempt(user, "remove-member", ws, member) as ctx:
            ops.remove_member(ctx, ws, member, actor_role=actor_role(ctx, user, ws))
            ctx.audit("remove-member", ws, member, "ok")
            cat, shared = ctx.catalog, ops.shares(ctx.session, ws)
        await hub_api.sync_groups(cat, ws)
        await hub_api.sync_shares(cat, shared, ws)
        return {"workspace": ws, "removed": member}

    @api.put("/workspaces/{ws}/members/{member}/quotas/{group}", summary="Cap a member inside the workspace")
    async def put_member_quota(ws: str, member: str, group: str, body: dict, user: dict = Depends(current_user)):
        require(user, Action.set_member_quota, ws, member)
        cap = capacity(body)
        with attempt(user, "set-member-quota", ws, member) as ctx:
            ops.set_member_quota(ctx, ws, member, group, cap)
            ctx.audit("set-member-quota", ws, f"{member}@{group}", "ok", _cap_text(cap))
        return {"workspace": ws, "user": member, "resource_group": group, **cap.model_dump()}

    @api.get("/allocations", summary="Resource groups, capacity, allocations and usage (platform admins)")
    async def get_allocations(user: dict = Depends(current_user)):
        _platform(user, "list-allocations")
        with context(user["name"]) as ctx:
            return _allocations(ctx)

    @api.put("/allocations/{group}/{ws}", summary="Allocate a resource group's quota to a workspace")
    async def put_allocation(group: str, ws: str, body: dict, user: dict = Depends(current_user)):
        _platform(user, "allocate", f"{group}/{ws}")
        cap = capacity(body)
        with attempt(user, "allocate", ws, group) as ctx:
            ops.set_allocation(ctx, ws, group, cap)
            ctx.audit("allocate", ws, group, "ok", _cap_text(cap))
        return {"workspace": ws, "resource_group": group, **cap.model_dump()}

    @api.delete("/allocations/{group}/{ws}", summary="Withdraw an allocation")
    async def delete_allocation(group: str, ws: str, user: dict = Depends(current_user)):
        _platform(user, "allocate", f"{group}/{ws}")
        with context(user["name"]) as ctx:
            ops.remove_allocation(ctx, ws, group)
            ctx.audit("remove-allocation", ws, group, "ok")
        return {"workspace": ws, "resource_group": group, "removed": True}

    @api.get("/audit", summary="The audit log, newest first (platform admins)")
    async def get_audit(limit: int = 200, user: dict = Depends(current_user)):
        if not can(user, "audit"):
            raise HTTPException(403, "only platform admins may read the audit log")
        if not 1 <= limit <= 10000:
            raise HTTPException(400, "limit must be between 1 and 10000")
        with context(user["name"]) as ctx:
            rows = ctx.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return [{"at": r.at.isoformat() + "Z", "actor": r.actor, "action": r.action, "workspace": r.workspace,
                     "target": r.target, "outcome": r.outcome, "detail": r.detail} for r in rows]

    app.include_router(api)
    _pages(app)
    return app


async def _save_image(user: dict, ws: str, owner: str | None, server: str, name: str) -> dict:
    """Commit (+ push) in a thread, then one row; a failure after the commit removes the tag."""
    me = user["name"]
    target = f"{owner or me}/{server or 'default'}"
    require(user, Action.save_image, ws, target)
    with attempt(user, "save-image", ws, target) as ctx:
        ops.workspace_or_404(ctx.catalog, ws)
        if owner not in (None, me):
            raise ops.OpError(403, f"{me} may only save their own instances, not {target}")
        if not snapshots.valid_name(name):
            raise ops.OpError(400, f"image name {name!r}: {snapshots.NAME_RULE}")
    image_id = snapshots.new_id()
    try:
        saved = await asyncio.to_thread(_engine, snapshots.save, ws=ws, user=me, server=server, name=name,
                                        tag=image_id)
    except snapshots.SaveError as exc:
        with context(me) as ctx:
            ctx.audit("save-image", ws, target, "refused" if exc.status < 500 else "failed", exc.message)
        raise ops.OpError(exc.status, exc.message) from None
    try:
        with context(me) as ctx:
            row = ops.record_saved_image(ctx, ws, image_id, name, saved.ref, saved.base_image, saved.size)
            ctx.audit("save-image", ws, image_id, "ok", f"{target} -> {saved.ref}")
    except BaseException:
        await asyncio.to_thread(_engine, snapshots.remove_tag, saved.ref)
        raise
    return {**row, "pushed": saved.pushed}


async def _delete_image(user: dict, ws: str, image_id: str) -> dict:
    """Refused (409) while an instance runs from the image; else the local tag, the registry's
    manifest (best effort) and the row go."""
    require(user, Action.publish_image, ws, image_id)
    with attempt(user, "delete-image", ws, image_id) as ctx:
        ref = ops.saved_image_or_404(ctx, ws, image_id).image
    using = await asyncio.to_thread(_engine, snapshots.in_use, image_id)
    with attempt(user, "delete-image", ws, image_id) as ctx:
        if using:
            raise ops.OpError(409, f"instances run from {image_id}: {', '.join(using)}; stop them first")
    try:
        await asyncio.to_thread(_engine, snapshots.remove_tag, ref)
    except Exception as exc:
        with context(user["name"]) as ctx:
            ctx.audit("delete-image", ws, image_id, "failed", str(exc))
        raise ops.OpError(500, f"the engine could not remove {ref}: {getattr(exc, 'explanation', None) or exc}")
    problem = await asyncio.to_thread(snapshots.delete_from_registry, ref)
    with context(user["name"]) as ctx:
        row = ops.saved_image_or_404(ctx, ws, image_id)
        ctx.session.delete(row)
        ctx.audit("delete-image", ws, image_id, "ok", ref + (f" (registry: {problem})" if problem else ""))
    return {"deleted": image_id, "image": ref, "registry": problem or "ok"}


def capacity(body: dict) -> Capacity:
    """API bodies and form fields alike, through the catalogue's Capacity model."""
    if not isinstance(body, dict):
        raise ops.OpError(400, "body must be a JSON object with cpu, memory and gpu")
    try:
        return Capacity.model_validate(body)
    except ValidationError as exc:
        raise ops.OpError(400, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                         for e in exc.errors())) from None


def _cap_text(cap: Capacity) -> str:
    return f"cpu={cap.cpu:g} memory={format_memory(cap.memory)} gpu={cap.gpu}"


def _platform(user: dict, action: str, target: str = "") -> None:
    if is_platform_admin(user):
        return
    with context(user["name"]) as ctx:
        ctx.audit(action, "", target, "refused", f"{user['name']} is not a platform admin")
    raise HTTPException(403, "only platform admins may manage allocations")


def _allocations(ctx: ops.Ctx) -> list[dict]:
    cat = ctx.catalog
    out = []
    for g in cat.resource_groups:
        used = usage(ctx.session, g.id)
        rows = []
        for w in cat.workspaces:
            a = allocation(ctx.base, ctx.session, w.id, g.id)
            if a or g.id in w.resource_groups:
                u = usage(ctx.session, g.id, workspace=w.id)
                rows.append({"workspace": w.id, "quota": a.model_dump() if a else None,
                             "used": {"cpu": u.cpu, "memory": u.memory, "gpu": u.gpu}})
        out.append({"id": g.id, "kind": g.kind, "oversell": g.oversell, "capacity": g.capacity.model_dump(),
                    "used": {"cpu": used.cpu, "memory": used.memory, "gpu": used.gpu}, "workspaces": rows})
    return out


# --- pages ----------------------------------------------------------------------------
def _pages(app: FastAPI) -> None:
    def render(name: str, request: Request, user: dict, **kw) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        html = templates.get_template(name).render(prefix=PREFIX, user=user, csrf=token, Role=Role,
                                                   platform=is_platform_admin(user), **kw)
        resp = HTMLResponse(html)
        resp.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path=PREFIX)
        return resp

    def check_csrf(request: Request, token: str) -> None:
        if not token or token != request.cookies.get(CSRF_COOKIE):
            raise HTTPException(403, "the form expired; reload the page and try again")

    def back(ws: str, message: str = "", error: str = "") -> RedirectResponse:
        from urllib.parse import urlencode
        q = urlencode({k: v for k, v in {"message": message, "error": error}.items() if v})
        return RedirectResponse(f"{PREFIX}workspaces/{ws}" + (f"?{q}" if q else ""), status_code=303)

    @app.get(f"{PREFIX}oauth_callback", include_in_schema=False)
    async def oauth_callback(request: Request, code: str = "", state: str = ""):
        saved, _, next_url = request.cookies.get(STATE_COOKIE, "").partition("|")
        if not code or not state or state != saved:
            raise HTTPException(400, "login state does not match; open the page again")
        token = await hub_auth().token_for_code(code, sync=False)
        resp = RedirectResponse(next_url if next_url.startswith(("http://", "https://", "/")) else PREFIX, 302)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="lax", path=PREFIX)
        resp.delete_cookie(STATE_COOKIE, path=PREFIX)
        return resp

    @app.get(PREFIX, response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request, user: dict = Depends(current_user)):
        with context(user["name"]) as ctx:
            rows = [{"ws": w, "role": w.members.get(user["name"])} for w in ctx.catalog.workspaces
                    if can(user, Action.view, w.id)]
        return render("index.html", request, user, workspaces=rows)

    @app.get(PREFIX + "workspaces/{ws}", response_class=HTMLResponse, include_in_schema=False)
    async def workspace_page(ws: str, request: Request, message: str = "", error: str = "",
                             user: dict = Depends(current_user)):
        require(user, Action.view, ws, ws)
        with context(user["name"]) as ctx:
            data = ops.overview(ctx, ws)
            insts = ops.instances(ctx, ws)
        states = await hub_api.server_states({r["user"] for r in insts})
        for r in insts:
            r["state"] = states.get((r["user"], r["server"]), "stopped")
        perms = {a.value: can(user, a, ws) for a in Action}
        with context(user["name"]) as ctx:
            saved = ops.saved_images(ctx, ws, all_private=perms[Action.publish_image.value])
        return render("workspace.html", request, user, ws=data, instances=insts, perms=perms, saved=saved,
                      message=message, error=error)

    @app.post(PREFIX + "workspaces/{ws}/images", include_in_schema=False)
    async def image_form(ws: str, request: Request, user: dict = Depends(current_user), op: str = Form(""),
                         server: str = Form(""), name: str = Form(""), image_id: str = Form(""),
                         csrf: str = Form("")):
        check_csrf(request, csrf)
        try:
            if op == "save":
                row = await _save_image(user, ws, None, server, name.strip())
                return back(ws, message=f"saved {user['name']}/{server or 'default'} as {row['id']} ({row['image']})")
            if op == "publish":
                require(user, Action.publish_image, ws, image_id)
                with attempt(user, "publish-image", ws, image_id) as ctx:
                    row = ops.publish_image(ctx, ws, image_id)
                    ctx.audit("publish-image", ws, image_id, "ok", row["image"])
                return back(ws, message=f"{image_id} is published to {ws}")
            if op == "delete":
                await _delete_image(user, ws, image_id)
                return back(ws, message=f"{image_id} deleted")
            return back(ws, error="choose save, publish or delete")
        except ops.OpError as exc:
            return back(ws, error=exc.message)

    @app.post(PREFIX + "workspaces/{ws}/members", include_in_schema=False)
    async def member_form(ws: str, request: Request, user: dict = Depends(current_user), member: str = Form(""),
                          role: str = Form(""), remove: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)
        member = member.strip()
        require(user, Action.manage_members, ws, member)
        try:
            with context(user["name"]) as ctx:
                if remove:
                    ops.remove_member(ctx, ws, member, actor_role=actor_role(ctx, user, ws))
                    ctx.audit("remove-member", ws, member, "ok")
                else:
                    if role not in {r.value for r in Role}:
                        raise ops.OpError(400, f"choose a role: {', '.join(r.value for r in Role)}")
                    ops.set_member(ctx, ws, member, Role(role), actor_role=actor_role(ctx, user, ws))
                    ctx.audit("set-member", ws, member, "ok", f"role={role}")
                cat, shared = ctx.catalog, ops.shares(ctx.session, ws)
        except ops.OpError as exc:
            with context(user["name"]) as ctx:
                ctx.audit("remove-member" if remove else "set-member", ws, member, "refused", exc.message)
            return back(ws, error=exc.message)
        await hub_api.sync_groups(cat, ws)
        await hub_api.sync_shares(cat, shared, ws)
        return back(ws, message=f"{member} removed" if remove else f"{member} is now {role}")

    @app.post(PREFIX + "workspaces/{ws}/quotas", include_in_schema=False)
    async def quota_form(ws: str, request: Request, user: dict = Depends(current_user), member: str = Form(""),
                         group: str = Form(""), cpu: str = Form(""), memory: str = Form(""), gpu: str = Form("0"),
                         csrf: str = Form("")):
        check_csrf(request, csrf)
        require(user, Action.set_member_quota, ws, member)
        try:
            cap = capacity({"cpu": cpu, "memory": memory, "gpu": gpu or 0})
            with context(user["name"]) as ctx:
                ops.set_member_quota(ctx, ws, member, group, cap)
                ctx.audit("set-member-quota", ws, f"{member}@{group}", "ok", _cap_text(cap))
        except ops.OpError as exc:
            with context(user["name"]) as ctx:
                ctx.audit("set-member-quota", ws, f"{member}@{group}", "refused", exc.message)
            return back(ws, error=exc.message)
        return back(ws, message=f"quota for {member} in {group}: {_cap_text(cap)}")

    @app.post(PREFIX + "workspaces/{ws}/instances/stop", include_in_schema=False)
    async def stop_form(ws: str, request: Request, user: dict = Depends(current_user), owner: str = Form(""),
                        server: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)
        require(user, Action.use_own if owner == user["name"] else Action.manage_any, ws, f"{owner}/{server}")
        with context(user["name"]) as ctx:
            if ops.instance_workspace(ctx.session, owner, server) != ws:
                return back(ws, error=f"no running instance {owner}/{server} in {ws}")
            ctx.audit("stop-instance", ws, f"{owner}/{server}", "ok")
        await hub_api.stop_server(owner, server)
        return back(ws, message=f"stopping {owner}/{server or 'default'}")

    @app.get(PREFIX + "admin/allocations", response_class=HTMLResponse, include_in_schema=False)
    async def allocations_page(request: Request, message: str = "", error: str = "",
                               user: dict = Depends(current_user)):
        _platform(user, "view-allocations")
        with context(user["name"]) as ctx:
            groups = _allocations(ctx)
            workspaces = [w.id for w in ctx.catalog.workspaces]
        return render("allocations.html", request, user, groups=groups, workspaces=workspaces,
                      message=message, error=error)

    @app.post(PREFIX + "admin/allocations", include_in_schema=False)
    async def allocation_form(request: Request, user: dict = Depends(current_user), ws: str = Form(""),
                              group: str = Form(""), cpu: str = Form(""), memory: str = Form(""),
                              gpu: str = Form("0"), csrf: str = Form("")):
        from urllib.parse import urlencode
        check_csrf(request, csrf)
        _platform(user, "allocate", f"{group}/{ws}")
        try:
            cap = capacity({"cpu": cpu, "memory": memory, "gpu": gpu or 0})
            with context(user["name"]) as ctx:
                ops.set_allocation(ctx, ws, group, cap)
                ctx.audit("allocate", ws, group, "ok", _cap_text(cap))
            q = urlencode({"message": f"{ws} now holds {_cap_text(cap)} of {group}"})
        except ops.OpError as exc:
            with context(user["name"]) as ctx:
                ctx.audit("allocate", ws, group, "refused", exc.message)
            q = urlencode({"error": exc.message})
        return RedirectResponse(f"{PREFIX}admin/allocations?{q}", status_code=303)


app = create_app()
