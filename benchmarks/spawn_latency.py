"""Spawn-to-ready, three arms interleaved: this hub, bare `podman run`, stock DockerSpawner.

    .venv/bin/python benchmarks/spawn_latency.py [--runs 20] [--no-stock] [--profile N]

- hub: this hub as the README runs it (hub_config/jupyterhub_config.py + configurable-http-proxy),
  as a user would: POST /hub/api/users/<u>/servers/<s> (kind notebook, instance type small:
  1 CPU, 1 GiB), follow the progress stream if the hub answers 202, then GET
  /user/<u>/<s>/api/status through the proxy until 200.
- bare: `podman run -d -p 127.0.0.1::8888 --cpus 1 --memory 1g <image> jupyter lab` until
  /api/status answers 200.
- stock: PyPI jupyterhub + dockerspawner (installed by this script into its own virtual
  environment under ~/.cache/dsw-bench), DummyAuthenticator, podman's Docker API, the same
  image and limits; ready exactly as the hub arm.

Arms run one spawn at a time, interleaved with the order rotated every run, so changes in the
machine's load hit them alike. Prints every run, a table (median, p90, min, max), the ratios,
the load average before/after, and the hub's CPU seconds and peak resident memory.

``--profile N``: afterwards, N more hub spawns under py-spy (sampling the hub process, 100 Hz;
raw stacks to --profile-out) and the hub log's per-phase timeline of those spawns. py-spy must
be installed in the venv (`.venv/bin/pip install py-spy`).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _bench as b

import docker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-stock", action="store_true", help="leave out the stock DockerSpawner arm")
    parser.add_argument("--stock-jupyterhub", default="5.5.4", help="PyPI jupyterhub for the stock arm "
                        "(default: the managed image's, whose jupyterhub-singleuser must match)")
    parser.add_argument("--stock-dockerspawner", default="14.0.0")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="N extra hub spawns under py-spy")
    parser.add_argument("--profile-out", default="/tmp/dsw-hub-spawn.pyspy.txt")
    parser.add_argument("--keep-logs", help="copy the hub logs to this folder")
    args = parser.parse_args()

    engine_url = subprocess.run([str(b.ROOT / "scripts" / "engine.sh")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
    engine = docker.DockerClient(base_url=engine_url, timeout=60)
    image = b.managed_image()
    venv = None if args.no_stock else b.stock_venv(args.stock_jupyterhub, args.stock_dockerspawner)
    print(f"machine: {b.machine()}; image {image}")
    user = f"{b.PREFIX}lat"
    times: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b.cleanup_engine(engine, prefix=b.PREFIX)
        b.bare_cleanup()
        hub = b.dsw_hub(tmp, engine_url, [user], 1, 2)
        stock = b.StockHub(tmp, venv, engine_url, image) if venv else None
        hub.start()
        if stock:
            stock.start()
        try:
            token = hub.user_token(user)
            opts = {"kind": "notebook", "instance_type": "small"}

            def run_hub(i):
                t = b.hub_spawn(hub.url, user, f"s{i}", token, opts)
                b.hub_remove(hub.url, user, f"s{i}", hub.token)
                return t

            def run_bare(i):
                t, cid = b.bare_run(image, f"{b.PREFIX}bare-{i}")
                b.bare_remove(cid)
                return t

            def run_stock(i):
                t = b.hub_spawn(stock.url, f"{b.PREFIX}stock", f"s{i}", stock.token)
                b.hub_remove(stock.url, f"{b.PREFIX}stock", f"s{i}", stock.token)
                return t

            arms = {"hub": run_hub, "bare": run_bare}
            if stock:
                arms["stock"] = run_stock
            for fn in arms.values():  # warm: image layers, home volume, first imports
                fn(999)
            pid = b.hub_pid(hub.proc)
            cpu0 = b.proc_cpu_seconds(pid)
            load_before = b.load()
            print(f"load average before: {load_before}", flush=True)
            names = list(arms)
            for i in range(args.runs):
                order = names[i % len(names):] + names[:i % len(names)]
                for name in order:
                    times[name].append(arms[name](i))
                print(f"run {i + 1:2d}: " + "  ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True)
            load_after = b.load()
            cpu = b.proc_cpu_seconds(pid) - cpu0
            rss, peak = b.proc_mem_mb(pid)

            if args.profile:
                profile(hub, user, token, opts, args.profile, args.profile_out)
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", str(hub.log), f"{args.keep_logs}/dsw-hub.log"])
                if stock:
                    subprocess.run(["cp", str(stock.log), f"{args.keep_logs}/stock-hub.log"])
        finally:
            hub.stop()
            if stock:
                stock.stop()
            b.cleanup_engine(engine, prefix=b.PREFIX)
            b.bare_cleanup()

    s = {n: b.summary(times[n]) for n in times}
    print(f"\nload average before {load_before}, after {load_after} (1/5/15 min)")
    print("| arm | n | median s | p90 s | min s | max s |\n|---|---|---|---|---|---|")
    for n in times:
        print(b.row({"hub": "this hub", "bare": "bare podman run",
                     "stock": "stock JupyterHub + DockerSpawner"}[n], s[n]))
    bare = s["bare"]["median"]
    print(f"\nratio this hub / bare (medians): {s['hub']['median'] / bare:.2f} (target <= 1.10)")
    if "stock" in s:
        print(f"ratio stock / bare (medians):    {s['stock']['median'] / bare:.2f}")
        print(f"this hub / stock (medians):      {s['hub']['median'] / s['stock']['median']:.2f}")
    print(f"hub process: {cpu:.1f} CPU s over the {args.runs} timed runs "
          f"({cpu / args.runs:.2f} s per spawn+stop incl. idle work); RSS {rss:.0f} MB, peak {peak:.0f} MB")


# --- profile --------------------------------------------------------------------------------
PHASES = [  # (label, pattern in the hub log) in the order a spawn passes them
    ("options -> spec", re.compile(r": Preparing ")),
    ("engine prepare done, create", re.compile(r": Starting container ")),
    ("container started, probing", re.compile(r": Waiting for the server to answer")),
    ("server answered", re.compile(r": Server ready")),
    ("proxy route added", re.compile(r"Adding user .* to proxy")),
    ("hub: spawn done", re.compile(r"took [0-9.]+ seconds to start")),
]
STAMP = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})")


def profile(hub, user: str, token: str, opts: dict, n: int, out: str) -> None:
    """N hub spawns under py-spy (raw stacks), then the top frames and the log timeline."""
    pyspy = Path(b.sys.executable).parent / "py-spy"
    mark = hub.log.stat().st_size
    rec = subprocess.Popen([str(pyspy), "record", "--pid", str(hub.proc.pid), "--rate", "100", "--format", "raw",
                            "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    spans = []
    try:
        for i in range(n):
            t0 = time.time()
            b.hub_spawn(hub.url, user, f"p{i}", token, opts)
            t1 = time.time()
            spans.append((t0, t1))
            b.hub_remove(hub.url, user, f"p{i}", hub.token)
    finally:
        rec.send_signal(2)
        rec.wait(30)
    print(f"\npy-spy raw stacks of {n} spawns (+ stops): {out}")
    top_frames(out)
    timeline(hub.log.read_bytes()[mark:].decode(errors="replace"), user)


def top_frames(path: str, limit: int = 25) -> None:
    """Inclusive samples per function, over all samples (the hub is idle between spawns, and
    py-spy leaves idle threads out, so these are the hub's busy moments)."""
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            incl[re.sub(r" \(.*/(site-packages|lib/python3\.\d+|main)/", " (", frame)] += int(count)
    print(f"{total} samples (10 ms each): {total / 100:.1f} busy s")
    for frame, c in incl.most_common(limit):
        print(f"{c:6d} {100 * c / max(total, 1):5.1f}%  {frame[:150]}")


def timeline(log: str, user: str) -> None:
    """Per-phase milliseconds of each profiled spawn, from the hub log's own timestamps."""
    runs: list[dict] = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if not m or user not in line:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        for label, pat in PHASES:
            if pat.search(line):
                if label == "options -> spec":
                    runs.append({})
                if runs and label not in runs[-1]:
                    runs[-1][label] = t
    if not runs:
        print("(no phases found in the hub log)")
        return
    print("\nphase timeline from the hub log (ms since 'Preparing', median over the profiled spawns):")
    labels = [label for label, _ in PHASES]
    prev = labels[0]
    for label in labels[1:]:
        deltas = [(r[label] - r[prev]) * 1000 for r in runs if label in r and prev in r]
        if deltas:
            print(f"  {prev} -> {label}: {sorted(deltas)[len(deltas) // 2]:.0f} ms")
        prev = label


if __name__ == "__main__":
    main()
