"""The service's pages: the same operations as the API (``actions``), behind HTML forms.

A form post carries the page's CSRF token (double-submit cookie, SameSite=strict) because
pages take the login cookie; a refusal comes back on the page it redirects to.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..catalog.models import Capacity
from ..quantities import format_memory
from ..roles import Action, Role
from . import actions
from .actions import OpError
from .auth import COOKIE, STATE_COOKIE, can, current_user, hub_auth, is_platform_admin

CSRF_COOKIE = "dsw-csrf"
templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
templates.filters["mem"] = lambda b: format_memory(int(b)) if b else "0"


def add_pages(app: FastAPI, prefix: str) -> None:
    def render(name: str, request: Request, user: dict, **kw) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        html = templates.get_template(name).render(prefix=prefix, user=user, csrf=token, Role=Role,
                                                   platform=is_platform_admin(user), **kw)
        resp = HTMLResponse(html)
        resp.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path=prefix)
        return resp

    def check_csrf(request: Request, token: str) -> None:
        if not token or not secrets.compare_digest(token, request.cookies.get(CSRF_COOKIE, "")):
            raise HTTPException(403, "the form expired; reload the page and try again")

    def back(path: str, message: str = "", error: str = "") -> RedirectResponse:
        q = urlencode({k: v for k, v in {"message": message, "error": error}.items() if v})
        return RedirectResponse(f"{prefix}{path}" + (f"?{q}" if q else ""), status_code=303)

    async def form_result(path: str, change, done) -> RedirectResponse:
        """Run one operation (a coroutine, or a blocking callable run in a thread); show its
        outcome or its refusal on the page at ``path``."""
        try:
            result = await change() if asyncio.iscoroutinefunction(change) else await asyncio.to_thread(change)
        except OpError as exc:
            return back(path, error=exc.message)
        return back(path, message=done(result))

    @app.get(f"{prefix}oauth_callback", include_in_schema=False)
    async def oauth_callback(request: Request, code: str = "", state: str = ""):
        saved, _, next_url = request.cookies.get(STATE_COOKIE, "").partition("|")
        if not code or not state or state != saved:
            raise HTTPException(400, "login state does not match; open the page again")
        token = await hub_auth().token_for_code(code, sync=False)
        resp = RedirectResponse(next_url if next_url.startswith(("http://", "https://", "/")) else prefix, 302)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="lax", path=prefix)
        resp.delete_cookie(STATE_COOKIE, path=prefix)
        return resp

    @app.get(prefix, response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request, user: dict = Depends(current_user)):
        rows = [{"ws": w["ws"], "role": w["role"]} for w in actions.workspaces(user)]
        return render("index.html", request, user, workspaces=rows)

    @app.get(prefix + "workspaces/{ws}", response_class=HTMLResponse, include_in_schema=False)
    async def workspace_page(ws: str, request: Request, message: str = "", error: str = "",
                             user: dict = Depends(current_user)):
        data = await asyncio.to_thread(actions.overview, user, ws)
        insts = await actions.instances(user, ws)
        saved = await asyncio.to_thread(actions.saved_images, user, ws)
        saving = await asyncio.to_thread(actions.saves_in_progress, user, ws)
        lifecycle = await asyncio.to_thread(actions.get_policy, user, ws)
        perms = {a.value: can(user, a, ws) for a in Action}
        return render("workspace.html", request, user, ws=data, instances=insts, perms=perms, saved=saved,
                      saving=saving, policy=lifecycle,
                      message=message, error=error)

    @app.post(prefix + "workspaces/{ws}/policy", include_in_schema=False)
    async def policy_form(ws: str, request: Request, user: dict = Depends(current_user),
                          idle_max_minutes: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)
        value = idle_max_minutes.strip() or None  # empty clears (the platform's bound)
        return await form_result(
            f"workspaces/{ws}", lambda: actions.set_policy(user, ws, value),
            lambda r: f"idle instances of {ws} stop after at most {r['idle_max_minutes']:g} minutes"
            if r["idle_max_minutes"] is not None else f"{ws} uses the platform's idle bound")

    @app.post(prefix + "workspaces/{ws}/instances/schedule", include_in_schema=False)
    async def schedule_form(ws: str, request: Request, user: dict = Depends(current_user), owner: str = Form(""),
                            server: str = Form(""), stop_in_hours: str = Form(""), stop_at: str = Form(""),
                            clear: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)
        name = f"{owner}/{server or 'default'}"
        if clear:
            return await form_result(f"workspaces/{ws}", lambda: actions.clear_scheduled_stop(user, ws, owner, server),
                                     lambda r: f"{name}: scheduled stop cleared")
        return await form_result(
            f"workspaces/{ws}",
            lambda: actions.schedule_stop(user, ws, owner, server, stop_at.strip() or None,
                                          stop_in_hours.strip() or None),
            lambda r: f"{name} stops at {r['scheduled_stop']['at']}")

    @app.post(prefix + "workspaces/{ws}/images", include_in_schema=False)
    async def image_form(ws: str, request: Request, user: dict = Depends(current_user), op: str = Form(""),
                         server: str = Form(""), name: str = Form(""), image_id: str = Form(""),
                         csrf: str = Form("")):
        check_csrf(request, csrf)
        page = f"workspaces/{ws}"
        if op == "save":
            return await form_result(page, lambda: actions.save_image(user, ws, None, server, name.strip()),
                                     lambda row: f"saved {user['name']}/{server or 'default'} as {row['id']} "
                                                 f"({row['image']})")
        if op == "publish":
            return await form_result(page, lambda: actions.publish_image(user, ws, image_id),
                                     lambda row: f"{image_id} is published to {ws}")
        if op == "delete":
            return await form_result(page, lambda: actions.delete_image(user, ws, image_id),
                                     lambda row: f"{image_id} deleted")
        return back(page, error="choose save, publish or delete")

    @app.post(prefix + "workspaces/{ws}/members", include_in_schema=False)
    async def member_form(ws: str, request: Request, user: dict = Depends(current_user), member: str = Form(""),
                          role: str = Form(""), remove: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)
        member = member.strip()
        if remove:
            async def change():
                return await actions.remove_member(user, ws, member)
            return await form_result(f"workspaces/{ws}", change, lambda r: f"{member} removed")

        async def change():
            return await actions.set_member(user, ws, member, actions.role(role))
        return await form_result(f"workspaces/{ws}", change, lambda r: f"{member} is now {r['role']}")

    @app.post(prefix + "workspaces/{ws}/quotas", include_in_schema=False)
    async def quota_form(ws: str, request: Request, user: dict = Depends(current_user), member: str = Form(""),
                         group: str = Form(""), cpu: str = Form(""), memory: str = Form(""), gpu: str = Form("0"),
                         csrf: str = Form("")):
        check_csrf(request, csrf)

        def change():
            return actions.set_member_quota(user, ws, member, group,
                                            actions.capacity({"cpu": cpu, "memory": memory, "gpu": gpu or 0}))
        return await form_result(f"workspaces/{ws}", change,
                                 lambda r: f"quota for {member} in {group}: {actions.cap_text(_cap(r))}")

    @app.post(prefix + "workspaces/{ws}/instances/stop", include_in_schema=False)
    async def stop_form(ws: str, request: Request, user: dict = Depends(current_user), owner: str = Form(""),
                        server: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)

        async def change():
            return await actions.stop_instance(user, ws, owner, server)
        return await form_result(f"workspaces/{ws}", change, lambda r: f"stopping {owner}/{server or 'default'}")

    @app.post(prefix + "workspaces/{ws}/instances/restart", include_in_schema=False)
    async def restart_form(ws: str, request: Request, user: dict = Depends(current_user), owner: str = Form(""),
                           server: str = Form(""), csrf: str = Form("")):
        check_csrf(request, csrf)

        async def change():
            return await actions.restart_instance(user, ws, owner, server)
        return await form_result(f"workspaces/{ws}", change,
                                 lambda r: f"restarting {owner}/{server or 'default'} with its owner's last options")

    @app.get(prefix + "admin/allocations", response_class=HTMLResponse, include_in_schema=False)
    def allocations_page(request: Request, message: str = "", error: str = "", user: dict = Depends(current_user)):
        groups = actions.allocations(user, "view-allocations")
        return render("allocations.html", request, user, groups=groups, workspaces=actions.workspace_ids(),
                      message=message, error=error)

    @app.post(prefix + "admin/allocations", include_in_schema=False)
    async def allocation_form(request: Request, user: dict = Depends(current_user), ws: str = Form(""),
                              group: str = Form(""), cpu: str = Form(""), memory: str = Form(""),
                              gpu: str = Form("0"), csrf: str = Form("")):
        check_csrf(request, csrf)

        def change():
            return actions.set_allocation(user, group, ws,
                                          actions.capacity({"cpu": cpu, "memory": memory, "gpu": gpu or 0}))
        return await form_result("admin/allocations", change,
                                 lambda r: f"{ws} now holds {actions.cap_text(_cap(r))} of {group}")


def _cap(result: dict) -> Capacity:
    return Capacity(cpu=result["cpu"], memory=result["memory"], gpu=result["gpu"])
