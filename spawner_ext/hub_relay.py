"""Relay the hub API from the container bridge's gateway to the hub on loopback (one machine).

Why: instances reach the host only through the engine's bridge gateway (podman: 10.88.0.1,
``host.containers.internal``), the proxy and the DSW service reach the hub on loopback, and
JupyterHub listens on one address. Listening on 0.0.0.0 for both also exposed the hub API on
every other address of the machine. Listening on the gateway alone fails too: netavark removes
the bridge (and its address) when the last container stops, so the hub could not start, and the
proxy could not reach it, while no instance runs.

So the hub listens on 127.0.0.1 and this relay (a hub-managed service: it starts and stops with
the hub) listens on the gateway address only, with ``IP_FREEBIND`` so it can listen before the
bridge exists; each connection is piped to the hub unchanged (HTTP and its tokens pass through,
nothing is read or logged).

    python -m spawner_ext.hub_relay <listen-ip> <listen-port> <hub-ip> <hub-port>
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from .lifetime import die_with_parent, watch_parent

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def listening_socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IPV6 if ":" in ip else socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((ip, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def relay(listen_ip: str, listen_port: int, hub_ip: str, hub_port: int, parent: int = 0) -> None:
    async def handle(reader, writer):
        try:
            hub_reader, hub_writer = await asyncio.open_connection(hub_ip, hub_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, hub_writer), _pipe(hub_reader, writer))

    server = await asyncio.start_server(handle, sock=listening_socket(listen_ip, listen_port))
    watcher = asyncio.create_task(watch_parent(parent)) if parent else None  # noqa: F841 (kept alive)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_ip, listen_port, hub_ip, hub_port = argv
    parent = os.getppid()
    die_with_parent(parent)  # a relay outliving a killed hub would keep the next hub's address
    asyncio.run(relay(listen_ip, int(listen_port), hub_ip, int(hub_port), parent))


if __name__ == "__main__":
    main(sys.argv[1:])
