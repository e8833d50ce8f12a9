"""The DSW service: REST API under /services/dsw/api/v1/ (OpenAPI from the code) and pages.

Run by JupyterHub as a managed service (``python -m spawner_ext.service``). Routes are thin:
the operations live in ``actions`` and are shared with the pages (``pages``). Routes that only
touch the database are plain ``def`` (FastAPI runs them in its thread pool); routes that also
call the hub are ``async`` and run their database steps in threads.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import actions, reconcile, schedule
from .auth import STATE_COOKIE, NeedsLogin, current_user, login_url
from .pages import add_pages
from .schemas import CapacityBody, MemberBody, PolicyBody, SaveImageBody, ScheduleBody, errors

PREFIX = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dsw/")
API = PREFIX + "api/v1"


class SameOrigin:
    """State changes (POST/PUT/PATCH/DELETE, API and pages) are refused with 403 when the
    browser says they come from another origin: ``Origin``, or when absent ``Referer``,
    is present and is neither the hub's public origin nor this service's own (with
    subdomains the service has its own host). A page served by a user's server (its own
    host with subdomains) then cannot drive these pages or this API with the visitor's
    login, whatever token it managed to read. Clients that send neither header (curl,
    scripts with a token) are not browsers acting for someone else and pass."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix

    @staticmethod
    def origin(url: str) -> str:
        p = urlsplit(url.strip())
        return f"{p.scheme}://{p.netloc}".lower() if p.scheme and p.netloc else ""

    @classmethod
    def allowed(cls, host: str, scheme: str) -> set[str]:
        """The hub's public origin (DSW_PUBLIC_URL, passed by the hub configuration; else the
        hub's public URL JupyterHub gives its services) and the service's own public origin;
        with none of them configured, the origin the request was addressed to."""
        names = ("DSW_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "JUPYTERHUB_PUBLIC_URL")
        found = {cls.origin(os.environ.get(n, "")) for n in names} - {""}
        return found or {f"{scheme}://{host}".lower()}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE") \
                and scope["path"].startswith(self.prefix):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            claimed = headers.get("origin") or headers.get("referer")
            if claimed is not None:
                sent = self.origin(claimed) or claimed.strip()
                ok = self.allowed(headers.get("host", ""),
                                  headers.get("x-forwarded-proto") or scope.get("scheme", "http"))
                if sent.lower() not in ok:
                    body = json.dumps({"detail": f"cross-origin change refused: the request comes from {sent!r}, "
                                                 f"not from this hub ({', '.join(sorted(ok))})"}).encode()
                    await send({"type": "http.response.start", "status": 403,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


class JSONBodies:
    """The API reads its bodies as JSON whatever ``Content-Type`` says, as JupyterHub's REST
    API does (``curl -d`` sends ``application/x-www-form-urlencoded``). A body that is not
    JSON is then refused with 400 by the JSON parser. Form posts are the pages' business
    (other paths, CSRF-checked); an API change never takes the login cookie (auth._token)."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE") \
                and scope.get("raw_path", scope["path"].encode()).startswith(self.prefix):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def _problem(e: dict) -> str:
    where = ".".join(str(p) for p in e["loc"])
    if e["type"] == "json_invalid":
        return (f"{where}: the request body must be JSON (an object as described in {API}/openapi.json), "
                f"not {e.get('ctx', {}).get('error', 'something else')}")
    return f"{where}: {e['msg']}"


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Blocking endpoints (database reads and writes) run in anyio's thread pool. Its default of
    # 40 threads only makes them queue for the GIL in turn; a few threads keep 16 requests in
    # flight as fast with less switching (benchmarks/api_latency.py, docs/benchmarks.md).
    anyio.to_thread.current_default_thread_limiter().total_tokens = int(os.environ.get("DSW_SERVICE_THREADS", "4"))
    tasks = []
    every = float(os.environ.get("DSW_RECONCILE_SECONDS", "60"))
    if every > 0:
        tasks.append(asyncio.create_task(reconcile.forever(every)))
    if (timer := schedule.period()) > 0:  # scheduled stops (times kept in the state database)
        tasks.append(asyncio.create_task(schedule.forever(timer)))
    if watch := getattr(app.state, "watch_parent", None):  # set by __main__ (dies with the hub)
        tasks.append(asyncio.create_task(watch()))
    yield
    for t in tasks:
        t.cancel()


def create_app() -> FastAPI:
    app = FastAPI(title="DSW Hub service", version="1", openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs",
                  redoc_url=None, lifespan=lifespan)
    app.add_middleware(JSONBodies, prefix=API + "/")
    app.add_middleware(SameOrigin, prefix=PREFIX)  # added last: runs first
    common = errors(400, 401, 403, 404)
    api = APIRouter(prefix=API, responses=common)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": "; ".join(_problem(e) for e in exc.errors())}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # each method is its own route: Allow lists them all
            methods = {m for r in api.routes if r.path_regex.match(request.url.path) for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(actions.OpError)
    async def _op_error(request: Request, exc: actions.OpError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(NeedsLogin)
    async def _login(request: Request, exc: NeedsLogin):
        url, state = login_url(request)
        resp = RedirectResponse(url, status_code=302)
        resp.set_cookie(STATE_COOKIE, f"{state}|{exc.url}", httponly=True, samesite="lax", path=PREFIX, max_age=600)
        return resp

    # --- API: reads ----------------------------------------------------------------
    @api.get("/workspaces", summary="Workspaces the caller can see")
    def list_workspaces(user: dict = Depends(current_user)):
        return [{k: v for k, v in w.items() if k != "ws"} for w in actions.workspaces(user)]

    @api.get("/workspaces/{ws}", summary="Members, images, instance types, quotas and usage")
    def get_workspace(ws: str, user: dict = Depends(current_user)):
        return actions.overview(user, ws)

    @api.get("/workspaces/{ws}/instances", summary="The workspace's instances")
    async def list_instances(ws: str, user: dict = Depends(current_user)):
        return await actions.instances(user, ws)

    @api.get("/workspaces/{ws}/images", summary="Saved images: published ones and the caller's own")
    def list_images(ws: str, user: dict = Depends(current_user)):
        return actions.saved_images(user, ws)

    @api.get("/allocations", summary="Resource groups, capacity, allocations and usage (platform admins)")
    def get_allocations(user: dict = Depends(current_user)):
        return actions.allocations(user)

    @api.get("/audit", summary="The audit log, newest first (platform admins)")
    def get_audit(limit: int = Query(200, ge=1, le=10000), user: dict = Depends(current_user)):
        return actions.audit_log(user, limit)

    # --- API: instances ------------------------------------------------------------
    @api.post("/workspaces/{ws}/instances/{owner}/stop", summary="Stop an instance (server '' is the default)")
    async def stop_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        return await actions.stop_instance(user, ws, owner, server)

    @api.post("/workspaces/{ws}/instances/{owner}/restart", responses=errors(409, 502),
              summary="Restart an instance with its owner's last options (server '' is the default)")
    async def restart_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        return await actions.restart_instance(user, ws, owner, server)

    @api.post("/workspaces/{ws}/instances/{owner}/share", responses=errors(502),
              summary="Share an own instance with the workspace's builders (needs subdomains)")
    async def share_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        return await actions.share_instance(user, ws, owner, server)

    @api.delete("/workspaces/{ws}/instances/{owner}/share", summary="Stop sharing an own instance")
    async def unshare_instance(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        return await actions.unshare_instance(user, ws, owner, server)

    @api.put("/workspaces/{ws}/instances/{owner}/schedule",
             summary="Schedule the stop of an instance: stop_at (ISO time) or stop_in_hours (server '' is the default)")
    def put_schedule(ws: str, owner: str, body: ScheduleBody, server: str = "", user: dict = Depends(current_user)):
        return actions.schedule_stop(user, ws, owner, server, body.stop_at, body.stop_in_hours)

    @api.delete("/workspaces/{ws}/instances/{owner}/schedule", summary="Clear an instance's scheduled stop")
    def delete_schedule(ws: str, owner: str, server: str = "", user: dict = Depends(current_user)):
        return actions.clear_scheduled_stop(user, ws, owner, server)

    # --- API: workspace lifecycle policy -----------------------------------------------
    @api.get("/workspaces/{ws}/policy", summary="The workspace's idle shutdown bound and the platform's bounds")
    def get_policy(ws: str, user: dict = Depends(current_user)):
        return actions.get_policy(user, ws)

    @api.put("/workspaces/{ws}/policy",
             summary="Set the workspace's idle shutdown bound (owners, admins; null clears it)")
    def put_policy(ws: str, body: PolicyBody, user: dict = Depends(current_user)):
        return actions.set_policy(user, ws, body.idle_max_minutes)

    # --- API: saved images ---------------------------------------------------------
    @api.post("/workspaces/{ws}/images", status_code=201, summary="Save an own running instance as an image",
              responses=errors(409, 500, 502))
    async def save_image(ws: str, body: SaveImageBody, user: dict = Depends(current_user)):
        # minutes of engine or agent work: not on the few threads the quick endpoints share
        return await asyncio.to_thread(actions.save_image, user, ws, body.user, body.server, body.name)

    @api.post("/workspaces/{ws}/images/{image_id}/publish", summary="Publish a saved image to the workspace")
    def publish_image(ws: str, image_id: str, user: dict = Depends(current_user)):
        return actions.publish_image(user, ws, image_id)

    @api.delete("/workspaces/{ws}/images/{image_id}", summary="Delete a saved image (row, local tag, registry)",
                responses=errors(409, 500))
    async def delete_image(ws: str, image_id: str, user: dict = Depends(current_user)):
        return await asyncio.to_thread(actions.delete_image, user, ws, image_id)  # registry round trips

    # --- API: members, quotas, allocations -----------------------------------------
    @api.put("/workspaces/{ws}/members/{member}", summary="Add a member or change their role")
    async def put_member(ws: str, member: str, body: MemberBody, user: dict = Depends(current_user)):
        return await actions.set_member(user, ws, member, body.role)

    @api.delete("/workspaces/{ws}/members/{member}", summary="Remove a member")
    async def delete_member(ws: str, member: str, user: dict = Depends(current_user)):
        return await actions.remove_member(user, ws, member)

    @api.put("/workspaces/{ws}/members/{member}/quotas/{group}", summary="Cap a member inside the workspace",
             responses=errors(409))
    def put_member_quota(ws: str, member: str, group: str, body: CapacityBody, user: dict = Depends(current_user)):
        return actions.set_member_quota(user, ws, member, group, body)

    @api.put("/allocations/{group}/{ws}", summary="Allocate a resource group's quota to a workspace",
             responses=errors(409))
    def put_allocation(group: str, ws: str, body: CapacityBody, user: dict = Depends(current_user)):
        return actions.set_allocation(user, group, ws, body)

    @api.delete("/allocations/{group}/{ws}", summary="Withdraw an allocation")
    def delete_allocation(group: str, ws: str, user: dict = Depends(current_user)):
        return actions.remove_allocation(user, group, ws)

    app.include_router(api)
    add_pages(app, PREFIX)
    _document_errors_as_sent(app)
    return app


def _document_errors_as_sent(app: FastAPI) -> None:
    """FastAPI documents 422 for validation errors; this service answers them with 400 and
    the common error body (declared on every route), so 422 is dropped from the document."""
    def openapi():
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)
            for path in doc.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema
    app.openapi = openapi


app = create_app()
