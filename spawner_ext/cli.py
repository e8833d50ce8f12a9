"""`dsw-hub` command: check a catalogue, or run the hub with the packaged config."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .catalog import CatalogError, load_catalog

CONFIG = Path(__file__).resolve().parent.parent / "hub_config" / "jupyterhub_config.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsw-hub", description="DSW Hub")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-catalog", help="validate a catalogue file and summarise it")
    check.add_argument("path")
    sub.add_parser("up", help="run the hub (scripts/up.sh also installs and builds what is missing)")
    args, rest = parser.parse_known_args(argv)

    if args.command == "check-catalog":
        try:
            cat = load_catalog(args.path)
        except CatalogError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.path}: ok — {len(cat.workspaces)} workspaces, {len(cat.usernames())} users, "
              f"{len(cat.images)} images, {len(cat.instance_types)} instance types, "
              f"{len(cat.resource_groups)} resource groups")
        return 0
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    os.execv(str(jupyterhub), [str(jupyterhub), "-f", str(CONFIG), *rest])
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
