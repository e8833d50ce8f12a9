"""The service's calls to the hub's REST API with its own token (scopes: role dsw-service)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx

from ..catalog.models import Catalog
from ..rbac import groups as catalog_groups
from ..rbac import ws_builders_group, ws_group, ws_role_group
from ..roles import Role


#: one client per event loop, kept open: a new httpx client builds a new SSL context (~5 ms of
#: CPU) even for plain http, which made every DSW request that asks the hub cost more than the
#: hub's own answer (benchmarks/api_latency.py, docs/benchmarks.md)
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


@contextlib.asynccontextmanager
async def _client():
    """The hub's API with the service's token, on a pooled client of this event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for old in [lp for lp in _clients if lp.is_closed()]:
            del _clients[old]  # clients of finished loops (tests run several)
        client = _clients[loop] = httpx.AsyncClient(
            base_url=os.environ["JUPYTERHUB_API_URL"].rstrip("/"),
            headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"}, timeout=30,
        )
    yield client


async def _users(hub: httpx.AsyncClient, state: str | None = None, page: int = 200):
    """Every hub user model (those with a server in ``state``: active, ready), page by page
    (the hub caps a page at api_page_max_limit). Raises on any hub error: a caller must never
    conclude from a failed read that nobody or nothing is there."""
    offset = 0
    while True:
        params = {"offset": offset, "limit": page, **({"state": state} if state else {})}
        r = await hub.get("/users", params=params)
        r.raise_for_status()
        batch = r.json()
        for u in batch:
            yield u
        offset += len(batch)
        if len(batch) < page:
            return


async def _usernames(hub: httpx.AsyncClient) -> set[str]:
    return {u["name"] async for u in _users(hub)}


def workspace_group_names(ws: str) -> list[str]:
    return [ws_group(ws), ws_builders_group(ws), *(ws_role_group(ws, r) for r in Role)]


async def workspace_groups(ws: str) -> dict[str, set[str]]:
    """The hub's members of each of ``ws``'s groups (a missing group: nobody)."""
    out = {}
    async with _client() as hub:
        for group in workspace_group_names(ws):
            r = await hub.get(f"/groups/{group}")
            if r.status_code == 404:
                out[group] = set()
                continue
            r.raise_for_status()
            out[group] = set(r.json().get("users", []))
    return out


async def sync_groups(catalog: Catalog, only_workspace: str | None = None,
                      seen: dict[str, set[str]] | None = None, current=None) -> None:
    """Make the hub's workspace groups equal the effective membership of ``catalog``.

    Removal is race-free when ``seen`` (the hub's groups read BEFORE ``catalog`` was
    snapshotted) is given: only those members are removed. Whoever joined the hub's group
    after that read was committed to the state database after it too, so a snapshot older
    than that change never removes them (the change syncs them itself).

    Addition is race-free when ``current`` (an async callable giving a fresh catalogue) is
    given: a member is added only if a snapshot taken after the group was read still has
    them. Every change commits to the state database before it touches the hub, so a member
    missing from the group because a change (an SSO login, a removal) took them out is
    missing from that snapshot too; the older ``catalog`` would have put them back."""
    want = catalog_groups(catalog)
    if only_workspace:
        mine = set(workspace_group_names(only_workspace))
        want = {g: u for g, u in want.items() if g in mine} | {g: [] for g in mine if g not in want}
    async with _client() as hub:
        users = await _usernames(hub)
        for name in sorted({u for members in want.values() for u in members} - users):
            await hub.post(f"/users/{name}")
        for group, members in want.items():
            r = await hub.get(f"/groups/{group}")
            if r.status_code == 404:
                if members:
                    (await hub.post(f"/groups/{group}", json={"users": members})).raise_for_status()
                continue
            have = set(r.json().get("users", []))
            add = set(members) - have
            if add and current is not None:
                add &= set(catalog_groups(await current()).get(group, []))
            if add:
                (await hub.post(f"/groups/{group}/users", json={"users": sorted(add)})).raise_for_status()
            removable = have if seen is None else have & seen.get(group, set())
            if drop := sorted(removable - set(members)):
                (await hub.request("DELETE", f"/groups/{group}/users", json={"users": drop})).raise_for_status()


async def share_holders(shares: list[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """Who holds each (owner, server) share now (a server that is gone: nobody)."""
    out: dict[tuple[str, str], set[str]] = {}
    async with _client() as hub:
        for owner, server in shares:
            r = await hub.get(f"/shares/{owner}/{server}")
            out[(owner, server)] = _holders(r.json()) if r.status_code == 200 else set()
    return out


def _holders(body: dict) -> set[str]:
    return {item["user"]["name"] for item in body.get("items", []) if item.get("user")}


class ShareSync:
    """What one sync_shares pass found: servers that no longer exist (their hub shares went
    with them), and shares that failed (each one reported; the others were still synced)."""

    def __init__(self):
        self.gone: list[tuple[str, str]] = []
        self.problems: list[str] = []


async def sync_shares(catalog: Catalog, shares: list[tuple[str, str]], ws: str,
                      seen: dict[tuple[str, str], set[str]] | None = None, allowed: bool = True) -> ShareSync:
    """Share each (owner, server) with every member of ``ws`` whose role may use instances,
    and only them. Revocation is race-free as in ``sync_groups`` when ``seen`` is given.

    Per-user shares, not one group share: JupyterHub 5.5 resolves a token's scopes from
    the user's own shares only (group shares do not reach API or OAuth tokens).
    ``allowed=False`` (sharing off: no subdomains) revokes instead of sharing.
    """
    builders = set(catalog_groups(catalog).get(ws_builders_group(ws), [])) if allowed else set()
    result = ShareSync()
    async with _client() as hub:
        for owner, server in shares:
            path = f"/shares/{owner}/{server}"
            try:
                r = await hub.get(path)
                if r.status_code == 404:  # the server was deleted: JupyterHub deleted its shares
                    result.gone.append((owner, server))
                    continue
                r.raise_for_status()
                have = _holders(r.json())
                for user in sorted(builders - have - {owner}):
                    (await hub.post(path, json={"user": user})).raise_for_status()
                removable = have if seen is None else have & seen.get((owner, server), set())
                for user in sorted(removable - builders):
                    scope = f"access:servers!server={owner}/{server}"
                    (await hub.patch(path, json={"user": user, "scopes": [scope]})).raise_for_status()
            except httpx.HTTPError as exc:
                detail = exc.response.text[:200] if isinstance(exc, httpx.HTTPStatusError) else str(exc)
                result.problems.append(f"share {owner}/{server or 'default'}: {detail}")
    return result


async def revoke_shares(owner: str, server: str) -> None:
    async with _client() as hub:
        r = await hub.delete(f"/shares/{owner}/{server}")
        if r.status_code != 404:  # a deleted server has no shares left
            r.raise_for_status()


async def server_states(users: set[str]) -> dict[tuple[str, str], dict]:
    """Per (user, server): ``state`` (running, spawn, stop or stopped) and the hub's
    ``last_activity`` of the server (ISO time or None), from the hub's server models.

    A few members: their models, at once. More: one listing of the hub's active servers (paged),
    since the cost of a workspace's instance list is the number of hub round trips it makes
    (benchmarks/api_latency.py); a server absent from it is stopped."""
    def add(out: dict, user: str, servers: dict) -> None:
        for name, s in (servers or {}).items():
            out[(user, name)] = {"state": "running" if s.get("ready") else (s.get("pending") or "stopped"),
                                 "last_activity": s.get("last_activity")}

    out: dict[tuple[str, str], dict] = {}
    async with _client() as hub:
        if len(users) <= 2:
            answers = await asyncio.gather(*(hub.get(f"/users/{user}") for user in sorted(users)))
            for user, r in zip(sorted(users), answers):
                if r.status_code == 200:
                    add(out, user, r.json().get("servers"))
            return out
        async for u in _users(hub, "active"):
            if u["name"] in users:
                add(out, u["name"], u.get("servers"))
    return out


def _server_path(user: str, server: str) -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


async def server_model(user: str, server: str) -> dict | None:
    async with _client() as hub:
        r = await hub.get(f"/users/{user}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return (r.json().get("servers") or {}).get(server)


async def stop_server(user: str, server: str) -> int:
    async with _client() as hub:
        r = await hub.delete(_server_path(user, server))
        return r.status_code


async def restart_server(user: str, server: str, options: dict, timeout: float = 300) -> int:
    """Stop, wait until stopped, start again with ``options`` (the owner's last ones): the
    service spawns with its own token, as the owner would have."""
    async with _client() as hub:
        r = await hub.delete(_server_path(user, server))
        if r.status_code not in (202, 204):
            r.raise_for_status()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            u = await hub.get(f"/users/{user}")
            u.raise_for_status()
            s = (u.json().get("servers") or {}).get(server)
            if not s or not (s.get("ready") or s.get("pending")):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{user}/{server or 'default'} did not stop within {timeout:g}s")
            await asyncio.sleep(0.5)
        r = await hub.post(_server_path(user, server), json=options)
        r.raise_for_status()
        return r.status_code


async def ready_servers() -> dict[tuple[str, str], dict]:
    """(user, server) -> the hub's server model, for every server that is ready (running, not
    starting or stopping). Raises on any hub error."""
    async with _client() as hub:
        return {(u["name"], name): s async for u in _users(hub, "ready")
                for name, s in (u.get("servers") or {}).items() if s.get("ready") and not s.get("pending")}


async def active_servers() -> set[tuple[str, str]]:
    """(user, server name) of every server the hub reports ready or pending (starting or
    stopping); "" is the default server. Raises on any hub error: the caller must not
    conclude that nothing runs from a failed read."""
    async with _client() as hub:
        return {(u["name"], name) async for u in _users(hub, "active")
                for name, s in (u.get("servers") or {}).items() if s.get("ready") or s.get("pending")}
