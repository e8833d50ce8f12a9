"""Per-user sign-in for the embedded default: jupyterhub-nativeauthenticator, limited to members.

Why nativeauthenticator: it is the kept JupyterHub authenticator for "accounts the hub holds
itself": bcrypt-hashed passwords per user, a sign-up page whose accounts wait for an admin's
authorisation, a change-password page, an admin password reset and login throttling. DSW adds
only who may hold an account:

* sign-up and sign-in are for members of the *effective* catalogue (the YAML plus members added
  or removed at run time through the DSW service, read from the state database at each attempt)
  and platform admins; anyone else is refused, and a member removed later cannot sign in again;
* no account is ever authorised by its name alone (nativeauthenticator pre-authorises sign-ups
  of ``admin_users``/``allowed_users``): every sign-up waits for a platform admin at
  ``/hub/authorize``, so signing up under someone else's name gives nothing;
* the first platform admin's account is made at the first start with a generated password,
  printed once and kept (0600) with the hub's state; an existing account is never overwritten.

A member's first password: they sign up at ``/hub/signup`` with a password of their own and a
platform admin authorises the account (or the admin sets a one-time password at
``/hub/change-password/<user>``, hands it out, and the member changes it at
``/hub/change-password``). There is no shared password.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import TEMPLATE_DIR  # noqa: F401  (JupyterHub 5 needs it in template_paths)
from nativeauthenticator.handlers import DiscardHandler, ToggleAuthorizationHandler
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Unicode, default

CREDENTIALS = "credentials.json"


def ensure_admin_password(state_dir: str | Path) -> tuple[str, bool]:
    """The first platform admin's generated password and whether it was made now.

    Kept in ``credentials.json`` (0600) beside the hub's state. A file from an older DSW that
    also held a shared member password is rewritten without it: that password opens nothing
    any more and should not lie around."""
    path = Path(state_dir) / CREDENTIALS
    if path.exists():
        creds = json.loads(path.read_text())
        if set(creds) != {"admin_password"}:
            _write(path, {"admin_password": creds["admin_password"]}, replace=True)
        return creds["admin_password"], False
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, {"admin_password": password}, replace=False)
    return password, True


def _write(path: Path, creds: dict, replace: bool) -> None:
    tmp = path.with_suffix(".tmp") if replace else path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    if replace:
        os.replace(tmp, path)


def announce(admin: str, password: str, path: Path) -> str:
    return (
        "\n" + "=" * 72 + "\n"
        f"DSW Hub: platform admin {admin!r} signs in with this generated password (shown once;\n"
        f"kept in {path}; change it at /hub/change-password):\n  {password}\n"
        "Members sign up at /hub/signup with a password of their own; authorise them at /hub/authorize.\n"
        + "=" * 72 + "\n"
    )


class _FromHubPagesOnly:
    """nativeauthenticator authorises and discards sign-ups on GET, and a signed-in admin's
    browser sends the hub cookie on a top-level navigation from any site, including a member's
    own host (<user>.localhost is the same site as localhost). Such a page could make an admin
    authorise a sign-up squatting another member's name. Only the hub's own pages (or a request
    typed by hand, which carries neither header) may do it."""

    async def prepare(self):
        site = self.request.headers.get("Sec-Fetch-Site")
        referer = self.request.headers.get("Referer", "")
        own = f"{self.request.protocol}://{self.request.host}"
        if (site is not None and site not in ("same-origin", "none")) or (
                site is None and referer and referer != own and not referer.startswith(own + "/")):
            raise web.HTTPError(403, "sign-ups can be authorised or discarded only from the hub's own "
                                     "Authorize page")
        await super().prepare()


class _ToggleAuthorization(_FromHubPagesOnly, ToggleAuthorizationHandler):
    pass


class _Discard(_FromHubPagesOnly, DiscardHandler):
    pass


class DSWNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator for catalogue members only, with the first admin's account made."""

    catalog_path = Unicode(config=True, help="The catalogue YAML (workspaces, members, platform admins).")
    state_db_url = Unicode(config=True, help="SQLAlchemy URL of the DSW state database (members changed at run time).")
    first_admin = Unicode(config=True, help="The platform admin whose account is made at the first start.")
    first_admin_password = Unicode(config=True, help="That account's generated password (used once: an "
                                   "existing account keeps its own).")

    @default("enable_signup")
    def _signup(self):
        return True

    @default("minimum_password_length")
    def _min_length(self):
        return 10

    @default("check_common_password")
    def _common(self):
        return True

    @default("allowed_failed_logins")
    def _throttle(self):
        return 10

    @default("seconds_before_next_try")
    def _wait(self):
        return 300

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.open_signup:
            raise ValueError("DSWNativeAuthenticator: open_signup would let anyone claim a member's name")
        if self.first_admin and self.first_admin_password and self.get_user(self.first_admin) is None:
            name = self.normalize_username(self.first_admin)
            self.db.add(UserInfo(username=name, is_authorized=True,
                                 password=bcrypt.hashpw(self.first_admin_password.encode(), bcrypt.gensalt())))
            self.db.commit()
            self.log.info("made the account of platform admin %s (password printed at first start)", name)

    def members(self) -> set[str]:
        """Who may hold an account now: the effective catalogue's users and the hub's admins."""
        from .catalog import load_catalog
        from .catalog.db import sessions
        from .catalog.live import effective_catalog

        catalog = load_catalog(self.catalog_path)
        with sessions(self.state_db_url)() as session:
            live = effective_catalog(catalog, session)
        return {self.normalize_username(n) for n in live.usernames() | set(self.admin_users)}

    async def check_allowed(self, username, auth_model=None):
        if username in await asyncio.to_thread(self.members):
            return True
        self.log.warning("sign-in refused: %s is no member of any workspace", username)
        return False

    def create_user(self, username, password, **kwargs):
        """Sign-up: members only (this runs in the hub's request; the catalogue read is small)."""
        if self.normalize_username(username) not in self.members():
            self.log.warning("sign-up refused: %s is no member of any workspace", username)
            return None
        return super().create_user(username, password, **kwargs)

    def get_handlers(self, app):
        guarded = {ToggleAuthorizationHandler: _ToggleAuthorization, DiscardHandler: _Discard}
        return [(path, guarded.get(handler, handler)) for path, handler in super().get_handlers(app)]

    def get_authed_users(self):
        """Only accounts an admin authorised: no sign-up is authorised by its name."""
        return {info.username for info in UserInfo.all_users(self.db) if info.is_authorized}
