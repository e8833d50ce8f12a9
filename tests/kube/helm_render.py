"""Render the chart with the real Helm engine (helm-sdkpy), in a child process.

helm-sdkpy has no ``template`` call: install into the API emulator with the memory
storage driver and wait=False, and read the rendered manifest from the result.
Helm's Go runtime reads HELM_DRIVER from the environment the process started with
(setting os.environ later has no effect), hence the child process.

Usage: python -m tests.kube.helm_render <request.json>; prints a JSON result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys


async def _render(request: dict) -> dict:
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace=request["namespace"], kubeconfig=request["kubeconfig"])
    try:
        result = await helm_sdkpy.Install(config).run(
            request["release"], request["chart"], values=request.get("values") or None,
            wait=False, timeout=60)
    except helm_sdkpy.HelmError as exc:
        return {"error": str(exc)}
    info = result.get("info") or {}
    return {"manifest": result.get("manifest", ""), "notes": info.get("notes", "")}


def main() -> None:
    assert os.environ.get("HELM_DRIVER") == "memory", "run with HELM_DRIVER=memory"
    with open(sys.argv[1]) as fh:
        request = json.load(fh)
    print(json.dumps(asyncio.run(_render(request))))


if __name__ == "__main__":
    main()
