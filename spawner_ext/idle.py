"""The idle culler's per-instance decision: jupyterhub-idle-culler stays the engine (it reads
the hub's ``last_activity`` -- API requests, busy kernels and kernel output, terminal traffic,
proxied traffic such as VSCode, as each instance reports it every culler round (hubconfig.py
sets the instances' activity interval; images/notebook/jupyter_server_config.py counts a busy
kernel) -- and stops servers through the hub API with its own least-privilege token); this
module is its ``cull_arbiter_hook``, loaded from the config file the hub passes it.

Why a hook: the culler has one ``--timeout``; DSW has a limit per instance (policy.py: the
platform default, the workspace's bound, the member's choice), fixed at admission in the
instance's lifecycle record. An instance with a record is culled after its own limit
(0: never); one without (started before records existed) after the culler's ``--timeout``,
the platform default. Before saying "cull", the hook writes the stop intent (reason idle),
so the hub's post-stop hook records why it stopped.
"""

from __future__ import annotations

import asyncio
import os

from . import instance_record
from .catalog.db import sessions
from .instance_record import StopReason


def _decide(user: str, server: str, inactive: float, default_limit: float) -> bool:
    db = sessions(os.environ["DSW_STATE_DB_URL"])
    row = instance_record.get(db, user, server)
    limit = row.idle_minutes * 60 if row is not None and row.started_at is not None else default_limit
    if limit <= 0 or inactive < limit:
        return False
    instance_record.mark_intent(db, user, server, StopReason.idle, "idle-culler")
    return True


async def arbiter(*, inactive, inactive_limit, server, **_):
    """jupyterhub-idle-culler's ``cull_arbiter_hook`` (awaited by the culler): the state
    database is read off the culler's event loop."""
    user, _, name = server["full_name"].partition("/")
    default = float(os.environ.get("DSW_IDLE_DEFAULT_SECONDS", "0") or 0)
    return await asyncio.to_thread(_decide, user, name, inactive.total_seconds(), default)


def config_file(state_dir: str) -> str:
    """Write the culler's config file (it loads a Python file: the hook is set there)."""
    path = os.path.join(state_dir, "idle_culler_config.py")
    text = ("import os\n"
            "# die with the hub that started this culler (spawner_ext/lifetime.py): a hub killed with\n"
            "# SIGKILL left it running, and every restart added one more culler\n"
            "__import__('spawner_ext.lifetime', fromlist=['die_with_parent']).die_with_parent(os.getppid())\n"
            "c.IdleCuller.cull_arbiter_hook = __import__('spawner_ext.idle', fromlist=['arbiter']).arbiter\n")
    os.makedirs(state_dir, exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path
