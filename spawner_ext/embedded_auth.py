"""Credentials for the embedded default (JupyterHub's shared-password authenticator).

Generated on first start, kept with the hub's state (mode 0600), printed once.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def ensure_credentials(state_dir: str | Path) -> tuple[dict[str, str], bool]:
    """Return ({admin_password, user_password}, created_now)."""
    path = Path(state_dir) / "credentials.json"
    if path.exists():
        return json.loads(path.read_text()), False
    creds = {
        "admin_password": secrets.token_urlsafe(32),   # the authenticator wants >= 32 chars
        "user_password": secrets.token_urlsafe(12),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    return creds, True


def announce(creds: dict[str, str], admins: list[str], path: Path) -> str:
    return (
        "\n" + "=" * 72 + "\n"
        "DSW Hub generated login passwords (shown once; kept in "
        f"{path}):\n"
        f"  platform admins ({', '.join(admins) or 'none'}): {creds['admin_password']}\n"
        f"  workspace members: {creds['user_password']}\n" + "=" * 72 + "\n"
    )
