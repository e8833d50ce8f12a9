"""The Python packages a member installed: the environment's distributions now against the
image's baseline (``/opt/dsw/base-packages.json``, ``pip list --format=json`` written when the
managed image was built).

Read through the instance's root (``/proc/<pid>/root``) the way ``pip list`` finds them, from
the ``*.dist-info`` metadata in the environment's site-packages: no process is started in the
instance, so a member's code cannot answer in its place.
"""

from __future__ import annotations

import glob
import json
import os
from importlib.metadata import distributions

VENV = "opt/dsw/venv"
BASELINE = "opt/dsw/base-packages.json"


def installed(root: str) -> dict[str, str]:
    paths = glob.glob(os.path.join(root, VENV, "lib", "python3*", "site-packages"))
    return {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions(path=paths)
            if d.metadata and d.metadata["Name"]}


def baseline(root: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(root, BASELINE)) as f:
            return {p["name"].lower().replace("_", "-"): p["version"] for p in json.load(f)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def difference(before: dict[str, str], after: dict[str, str]) -> dict:
    """{"added": {name: version}, "changed": {name: [before, after]}, "removed": {name: version}}"""
    return {"added": {n: v for n, v in sorted(after.items()) if n not in before},
            "changed": {n: [before[n], v] for n, v in sorted(after.items()) if n in before and before[n] != v},
            "removed": {n: v for n, v in sorted(before.items()) if n not in after}}


def of_instance(root: str) -> dict | None:
    """The difference for the instance whose file system is at ``root``; None without a baseline."""
    base = baseline(root)
    return None if base is None else difference(base, installed(root))
