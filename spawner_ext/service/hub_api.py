"""The service's calls to the hub's REST API with its own token (scopes: role dsw-service)."""

from __future__ import annotations

import os

import httpx

from ..catalog.models import Catalog
from ..rbac import groups as catalog_groups
from ..rbac import ws_builders_group, ws_group, ws_role_group
from ..roles import Role


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=os.environ["JUPYTERHUB_API_URL"].rstrip("/"),
        headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"}, timeout=30,
    )


async def _usernames(hub: httpx.AsyncClient, page: int = 200) -> set[str]:
    """Every hub user, page by page (the hub caps a page at api_page_max_limit)."""
    names: set[str] = set()
    while True:
        r = await hub.get("/users", params={"offset": len(names), "limit": page})
        r.raise_for_status()
        batch = [u["name"] for u in r.json()]
        names.update(batch)
        if len(batch) < page:
            return names


async def sync_groups(catalog: Catalog, only_workspace: str | None = None, remove: bool = True) -> None:
    """Make the hub's workspace groups equal the effective membership. ``remove=False`` only
    adds: a background pass whose snapshot may be older than a concurrent change must never
    undo it (a removal that races it is made by the change itself)."""
    want = catalog_groups(catalog)
    if only_workspace:
        mine = {ws_group(only_workspace), ws_builders_group(only_workspace),
                *(ws_role_group(only_workspace, r) for r in Role)}
        want = {g: u for g, u in want.items() if g in mine}
    async with _client() as hub:
        users = await _usernames(hub)
        for name in sorted({u for members in want.values() for u in members} - users):
            await hub.post(f"/users/{name}")
        for group, members in want.items():
            r = await hub.get(f"/groups/{group}")
            if r.status_code == 404:
                await hub.post(f"/groups/{group}", json={"users": members})
                continue
            have = set(r.json().get("users", []))
            if add := sorted(set(members) - have):
                (await hub.post(f"/groups/{group}/users", json={"users": add})).raise_for_status()
            if remove and (drop := sorted(have - set(members))):
                (await hub.request("DELETE", f"/groups/{group}/users", json={"users": drop})).raise_for_status()


async def sync_shares(catalog: Catalog, shares: list[tuple[str, str]], ws: str, revoke: bool = True) -> None:
    """Share each (owner, server) with every member of ``ws`` whose role may use instances.

    Per-user shares, not one group share: JupyterHub 5.5 resolves a token's scopes from
    the user's own shares only (group shares do not reach API or OAuth tokens).
    """
    builders = set(catalog_groups(catalog).get(ws_builders_group(ws), []))
    async with _client() as hub:
        for owner, server in shares:
            path = f"/shares/{owner}/{server}"
            r = await hub.get(path)
            have = {item["user"]["name"] for item in r.json().get("items", []) if item.get("user")} \
                if r.status_code == 200 else set()
            for user in sorted(builders - have - {owner}):
                (await hub.post(path, json={"user": user})).raise_for_status()
            for user in sorted(have - builders) if revoke else ():
                scope = f"access:servers!server={owner}/{server}"
                await hub.patch(path, json={"user": user, "scopes": [scope]})


async def revoke_shares(owner: str, server: str) -> None:
    async with _client() as hub:
        await hub.delete(f"/shares/{owner}/{server}")


async def server_states(users: set[str]) -> dict[tuple[str, str], str]:
    out = {}
    async with _client() as hub:
        for user in users:
            r = await hub.get(f"/users/{user}")
            if r.status_code != 200:
                continue
            for name, s in (r.json().get("servers") or {}).items():
                out[(user, name)] = "running" if s.get("ready") else (s.get("pending") or "stopped")
    return out


async def stop_server(user: str, server: str) -> int:
    async with _client() as hub:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = await hub.delete(path)
        return r.status_code


async def active_servers(page: int = 200) -> set[tuple[str, str]]:
    """(user, server name) of every server the hub reports ready or pending (starting or
    stopping); "" is the default server. Raises on any hub error: the caller must not
    conclude that nothing runs from a failed read."""
    found: set[tuple[str, str]] = set()
    async with _client() as hub:
        offset = 0
        while True:
            r = await hub.get("/users", params={"state": "active", "offset": offset, "limit": page})
            r.raise_for_status()
            batch = r.json()
            for u in batch:
                for name, s in (u.get("servers") or {}).items():
                    if s.get("ready") or s.get("pending"):
                        found.add((u["name"], name))
            offset += len(batch)
            if len(batch) < page:
                return found
