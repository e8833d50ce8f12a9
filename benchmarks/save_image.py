"""Saving an instance: the image agent vs `podman commit` + `podman push`, same change.

    .venv/bin/python benchmarks/save_image.py [--mb 100]

One run on this machine: a real docker-registry on loopback, the image agent as a real process,
a managed container (notebook-cpu, label dsw/managed=true) whose base image is already in the
registry. The container gets --mb MB of new files; then
  1. agent save (first), 2. podman commit + push (first),
  3. a new instance from the first saved image with one small file changed,
  4. agent save (second), 5. podman commit + push (second).
Prints seconds, the new layer's compressed size and the bytes the agent uploaded (counted by
its registry client), and checks the targets: second agent save <= 0.5 x commit + push, bytes
pushed <= 1.1 x the layer's compressed size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agent.agentproc import Agent  # noqa: E402
from tests.integration.conftest import managed_image  # noqa: E402
from tests.integration.test_images import Registry  # noqa: E402


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=100, help="MB of new files in the instance")
    args = p.parse_args()
    engine_url = sh(str(ROOT / "scripts" / "engine.sh")).splitlines()[-1]
    image = managed_image()
    with tempfile.TemporaryDirectory(prefix="dsw-bench-save-") as tmp:
        tmp = Path(tmp)
        reg = Registry(tmp)
        reg.start()
        (tmp / "agent").mkdir()
        agent = Agent(tmp / "agent", engine_url).start()
        name = first_name = f"bench-save-{uuid.uuid4().hex[:6]}"
        name2 = f"{first_name}-again"
        base = f"{reg.host}/dsw/base/{image.rsplit('/', 1)[-1]}"
        try:
            t_base, _ = timed(lambda: sh("podman", "push", "-q", "--tls-verify=false", image, base))
            cid = sh("podman", "run", "-d", "--name", name, "--label", "dsw/managed=true", image, "sleep", "infinity")
            # half random (incompressible), half text-like (compressible): about what pip leaves
            sh("podman", "exec", "-u", "1000:100", name, "sh", "-c",
               f"mkdir -p /opt/dsw/venv/bench && head -c {args.mb // 2}M /dev/urandom > /opt/dsw/venv/bench/random.bin"
               f" && yes 'def f(x): return x * 2  # python source' | head -c {args.mb - args.mb // 2}M"
               " > /opt/dsw/venv/bench/source.py")
            rows = []

            def agent_save(tag):
                r = agent.save(container_id=cid, base=base, target=f"{reg.host}/dsw/bench/agent:{tag}")
                r.raise_for_status()
                return r.json()

            def commit_push(tag):
                ref = f"{reg.host}/dsw/bench/commit:{tag}"
                sh("podman", "commit", "-q", name, ref)
                sh("podman", "push", "-q", "--tls-verify=false", ref)
                sh("podman", "rmi", ref)

            t1, first = timed(lambda: agent_save("one"))
            c1, _ = timed(lambda: commit_push("one"))
            # the member launches the saved image, changes one small file and saves again
            saved = f"{reg.host}/dsw/bench/agent:one"
            sh("podman", "pull", "-q", "--tls-verify=false", saved)
            cid = sh("podman", "run", "-d", "--name", name2, "--label", "dsw/managed=true", saved, "sleep", "infinity")
            name = name2
            sh("podman", "exec", "-u", "1000:100", name, "sh", "-c", "echo changed > /opt/dsw/venv/bench/small.txt")
            base = saved
            t2, second = timed(lambda: agent_save("two"))
            c2, _ = timed(lambda: commit_push("two"))
            rows = [("first save", t1, c1, first), ("second save", t2, c2, second)]
        finally:
            for n in (first_name, name2):
                subprocess.run(["podman", "rm", "-f", "-t", "0", n], capture_output=True)
            subprocess.run(["podman", "rmi", "-f", f"{reg.host}/dsw/bench/agent:one"], capture_output=True)
            agent.stop()
            reg.stop()
    print(f"base image pushed once in {t_base:.1f} s (not part of a save)")
    print("| save | agent s | commit+push s | agent/commit+push | new layer (compressed) | layer bytes pushed "
          "| + config bytes | layer pushed/layer |")
    print("|---|---|---|---|---|---|---|---|")
    for label, ta, tc, out in rows:
        print(f"| {label} | {ta:.2f} | {tc:.2f} | {ta / tc:.2f} | {out['layer_size']:,} B "
              f"| {out['layer_uploaded']:,} B | {out['uploaded'] - out['layer_uploaded']:,} B "
              f"| {out['layer_uploaded'] / out['layer_size']:.3f} |")
    ok_time = rows[1][1] <= 0.5 * rows[1][2]
    ok_bytes = all(out["layer_uploaded"] <= 1.1 * out["layer_size"] for *_, out in rows)
    print(f"targets: second save <= 0.5 x commit+push: {'met' if ok_time else 'NOT met'}; "
          f"bytes pushed <= 1.1 x layer: {'met' if ok_bytes else 'NOT met'}")


if __name__ == "__main__":
    main()
