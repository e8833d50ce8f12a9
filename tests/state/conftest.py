"""A real PostgreSQL for the state tests: Debian's server binaries (scripts/setup.sh --test
installs them), a throwaway cluster in a temp folder listening on loopback only, one fresh
database per test. Missing binaries fail the tests: they are not optional."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql: run scripts/setup.sh --test")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """(host, port) of a running throwaway cluster; stopped and deleted after the session.
    initdb refuses root, so as root the cluster runs as the ``postgres`` user."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="dsw-pg-"))
    run_as = {}
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        run_as = {"user": pg.pw_uid, "group": pg.pw_gid, "extra_groups": []}
    data, port = root / "data", _free_port()
    subprocess.run([bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True, cwd=root, **run_as)
    options = f"-k {root} -p {port} -h 127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start"],
                   check=True, capture_output=True, cwd=root, **run_as)
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run([bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=root, **run_as)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server) -> str:
    """SQLAlchemy URL of a new, empty database in the throwaway cluster."""
    host, port = postgres_server
    name = f"dsw_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+psycopg2://postgres@{host}:{port}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path) -> str:
    """The same test on both databases the state lives in: SQLite on one machine,
    PostgreSQL (the hub's database) on Kubernetes."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/dsw-state.sqlite"
    return request.getfixturevalue("pg_url")
