"""Who is calling: JupyterHub's HubOAuth, for API tokens and for the browser's OAuth login.

Permissions are the scopes JupyterHub resolved for the caller's token: the service
never decides from names or admin flags, only from ``check_scopes``.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from jupyterhub.services.auth import HubOAuth, check_scopes

from ..rbac import scope

COOKIE = "dsw-service-token"
STATE_COOKIE = "dsw-oauth-state"


class NeedsLogin(Exception):
    def __init__(self, url: str):
        self.url = url


_auth: HubOAuth | None = None


def hub_auth() -> HubOAuth:
    global _auth
    if _auth is None:
        _auth = HubOAuth(cache_max_age=30)  # configured from JUPYTERHUB_* environment
    return _auth


def _token(request: Request) -> str | None:
    """A token from the Authorization header; the login cookie only where a forged cross-site
    request could not change anything: reads, and pages (their forms carry a CSRF token)."""
    header = request.headers.get("authorization", "")
    kind, _, value = header.partition(" ")
    if kind.lower() in ("token", "bearer") and value:
        return value.strip()
    api = request.url.path.startswith(os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dsw/") + "api/")
    if api and request.method not in ("GET", "HEAD"):
        return None
    return request.cookies.get(COOKIE)


def login_url(request: Request) -> tuple[str, str]:
    auth = hub_auth()
    state = secrets.token_urlsafe(16)
    query = urlencode({"client_id": auth.oauth_client_id, "redirect_uri": auth.oauth_redirect_uri,
                       "response_type": "code", "state": state})
    return f"{auth.oauth_authorization_url}?{query}", state


async def current_user(request: Request) -> dict:
    token = _token(request)
    user = await hub_auth().user_for_token(token, sync=False) if token else None
    if user:
        return user
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        raise NeedsLogin(str(request.url))
    raise HTTPException(401, "log in through the hub, or send 'Authorization: token <API token>'")


def can(user: dict, action, ws: str | None = None) -> bool:
    """True if the caller's token carries the DSW scope for ``action`` on workspace ``ws``."""
    return bool(check_scopes({scope(action, ws)}, set(user.get("scopes", []))))


def is_platform_admin(user: dict) -> bool:
    return can(user, "allocate")
