"""The Python packages a member installed: the environment's distributions now against the
image's baseline (``/opt/dsw/base-packages.json``, ``pip list --format=json`` written when the
managed image was built).

Read through the instance's root (``/proc/<pid>/root``) from the ``*.dist-info`` folders in the
environment's site-packages, which is where ``pip list`` finds them: no process is started in
the instance, so a member's code cannot answer in its place.
"""

from __future__ import annotations

import glob
import json
import os
import re

VENV = "opt/dsw/venv"
BASELINE = "opt/dsw/base-packages.json"


def canonical(name: str) -> str:
    """PEP 503 normalised name: what pip compares."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(root: str) -> dict[str, str]:
    """Name -> version of every distribution in the environment, from the ``*.dist-info``
    folder names (``<name>-<version>.dist-info``, both escaped by the installer): a directory
    listing, not a metadata parse per package (hundreds of packages in a managed image)."""
    found = {}
    for site in glob.glob(os.path.join(root, VENV, "lib", "python3*", "site-packages")):
        for entry in os.listdir(site):
            if entry.endswith(".dist-info") and "-" in entry:
                name, _, version = entry[: -len(".dist-info")].partition("-")
                found[canonical(name)] = version
    return found


def baseline(root: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(root, BASELINE)) as f:
            return {canonical(p["name"]): p["version"] for p in json.load(f)}
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
