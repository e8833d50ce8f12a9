"""The Python packages a member installed: the environment's distributions now against the
image's baseline (``/opt/dsw/base-packages.json``, ``pip list --format=json`` written when the
managed image was built).

Read through the instance's root (``/proc/<pid>/root``) from the ``*.dist-info`` folders in the
environment's site-packages, which is where ``pip list`` finds them: no process is started in
the instance, so a member's code cannot answer in its place.
"""

from __future__ import annotations

import json
import os
import re

VENV = "opt/dsw/venv"
BASELINE = "opt/dsw/base-packages.json"


def canonical(name: str) -> str:
    """PEP 503 normalised name: what pip compares."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _no_symlink(root: str, rel: str) -> str | None:
    """``root/rel`` if no component below ``root`` is a symbolic link, else None.

    The agent reads through ``/proc/<pid>/root``, where an absolute symlink the member made
    (``site-packages -> /etc``) would resolve on the HOST: the member owns the environment, so
    every component is checked, and a link is never followed."""
    path = root
    for part in rel.split("/"):
        path = os.path.join(path, part)
        try:
            if os.path.islink(path):
                return None
        except OSError:
            return None
    return path


def installed(root: str) -> dict[str, str]:
    """Name -> version of every distribution in the environment, from the ``*.dist-info``
    folder names (``<name>-<version>.dist-info``, both escaped by the installer): a directory
    listing, not a metadata parse per package (hundreds of packages in a managed image)."""
    found = {}
    lib = _no_symlink(root, f"{VENV}/lib")
    pythons = [p for p in (os.listdir(lib) if lib and os.path.isdir(lib) else []) if p.startswith("python3")]
    for python in pythons:
        site = _no_symlink(root, f"{VENV}/lib/{python}/site-packages")
        if not site or not os.path.isdir(site):
            continue
        for entry in os.listdir(site):
            if entry.endswith(".dist-info") and "-" in entry:
                name, _, version = entry[: -len(".dist-info")].partition("-")
                found[canonical(name)] = version
    return found


def baseline(root: str) -> dict[str, str] | None:
    path = _no_symlink(root, BASELINE)
    if path is None:
        return None
    try:
        with open(path) as f:
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
