"""Many spawns at once: this hub against the same number of bare `podman run` at once.

    .venv/bin/python benchmarks/concurrent_spawns.py [--at-once 10 50] [--users 10] [--single 3]
        [--rounds 1] [--timeout 300] [--set CLASS.TRAIT=VALUE ...] [--profile]

For each count N in --at-once: N spawns through the hub released together (threads behind a
barrier), spread round-robin over --users members, each a named server (the benchmark's own
catalogue has a resource group big enough for all, and the hub's named-server limit is raised
with DSW_SERVER_LIMIT), each timed as a user sees it (POST, progress stream, then /api/status
through the proxy answers 200); then N bare `podman run` (same image, 1 CPU, 1 GiB) released
together, each until its /api/status answers 200. Arms alternate; all is removed between arms.

Prints per arm: failures, p50, p95, max, wall time; the ratios hub/bare at the same N, p95
against a single hub spawn (measured first, --single times, alone), the hub process's CPU
seconds during each hub arm and its peak resident memory, and the load average.

--set CLASS.TRAIT=VALUE (repeatable) runs the hub with that configuration (a config file that
loads hub_config/jupyterhub_config.py and then sets it), to compare hub settings. --profile records the
hub under py-spy during the largest hub arm (raw stacks in /tmp/dsw-hub-concurrent.pyspy.txt).

Bounded: every spawn gives up after --timeout seconds (counted as a failure), and the clients
probe bare servers every 0.1 s (the hub probes its own at ready_interval).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _bench as b
import docker

CLIENT_INTERVAL = 0.1  # seconds between a bench client's probes of a bare server


def at_once(n: int, fn) -> tuple[list[float], list[str], float]:
    """Run fn(i) for i < n in n threads released together: (times, errors, wall seconds)."""
    barrier = threading.Barrier(n)
    times: list[float] = []
    errors: list[str] = []

    def one(i):
        barrier.wait()
        try:
            times.append(fn(i))
        except Exception as exc:  # a failure is a figure here, not a crash
            errors.append(f"{i}: {exc}"[:300])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    return times, errors, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at-once", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--single", type=int, default=3, help="single hub spawns first, one at a time")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--set", action="append", default=[], metavar="CLASS.TRAIT=VALUE",
                        help="hub configuration for this run, e.g. LifecycleMixin.ready_interval=0.25")
    parser.add_argument("--config-extra", help="a Python config file run after the README's hub config")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep-log", help="copy the hub log here")
    args = parser.parse_args()

    engine_url = subprocess.run([str(b.ROOT / "scripts" / "engine.sh")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
    engine = docker.DockerClient(base_url=engine_url, timeout=60)
    image = b.managed_image()
    top = max(args.at_once)
    users = [f"{b.PREFIX}c{u}" for u in range(args.users)]
    per_user = -(-top // args.users)
    print(f"machine: {b.machine()}; image {image}")
    print(f"load average at start: {b.load()}", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b.cleanup_engine(engine, prefix=b.PREFIX)
        b.bare_cleanup()
        hub = b.dsw_hub(tmp, engine_url, users, per_user, top)
        if args.set or args.config_extra:
            cfg = tmp / "bench_config.py"
            cfg.write_text(f"c = get_config()\nload_subconfig({str(hub.config)!r})\n"
                           + "".join(f"c.{item.split('=', 1)[0]} = {item.split('=', 1)[1]}\n" for item in args.set)
                           + (Path(args.config_extra).read_text() if args.config_extra else ""))
            hub.config = cfg
            print(f"hub configuration for this run: {args.set} {args.config_extra or ''}")
        hub.start()
        pid = b.hub_pid(hub.proc)
        try:
            tokens = {u: hub.user_token(u) for u in users}
            opts = {"kind": "notebook", "instance_type": "small"}
            # warm: image layers, every member's home volume, first imports
            at_once(len(users), lambda i: b.hub_spawn(hub.url, users[i], "warm", tokens[users[i]], opts))
            at_once(len(users), lambda i: b.hub_remove(hub.url, users[i], "warm", hub.token))
            _, cid = b.bare_run(image, f"{b.PREFIX}cbare-warm")
            b.bare_remove(cid)

            single = []
            for i in range(args.single):
                single.append(b.hub_spawn(hub.url, users[0], f"one{i}", tokens[users[0]], opts))
                b.hub_remove(hub.url, users[0], f"one{i}", hub.token)
            single_bare = []
            for i in range(args.single):
                t, cid = b.bare_run(image, f"{b.PREFIX}cbare-one{i}", interval=CLIENT_INTERVAL)
                single_bare.append(t)
                b.bare_remove(cid)
            s1, s1b = b.summary(single), b.summary(single_bare)
            print(f"single spawn, alone: hub median {s1['median']:.2f} s, bare median {s1b['median']:.2f} s "
                  f"(n={args.single})", flush=True)

            def hub_arm(n: int, r: int) -> dict:
                names = [(users[i % len(users)], f"n{n}r{r}i{i}") for i in range(n)]
                load0, cpu0, gcpu0 = b.load(), b.proc_cpu_seconds(pid), b.group_cpu_seconds(pid)
                rec = None
                if args.profile and n == top:
                    rec = subprocess.Popen([str(Path(b.sys.executable).parent / "py-spy"), "record", "--pid",
                                            str(pid), "--rate", "100", "--format", "raw", "--nonblocking",
                                            "-o", "/tmp/dsw-hub-concurrent.pyspy.txt"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                times, errors, wall = at_once(n, lambda i: b.hub_spawn(
                    hub.url, names[i][0], names[i][1], tokens[names[i][0]], opts, args.timeout, CLIENT_INTERVAL))
                if rec:
                    rec.send_signal(2)
                    rec.wait(60)
                cpu = b.proc_cpu_seconds(pid) - cpu0
                gcpu = b.group_cpu_seconds(pid) - gcpu0
                rss, peak = b.proc_mem_mb(pid)
                out = {"arm": "hub", "n": n, "times": times, "errors": errors, "wall": wall, "cpu": cpu, "gcpu": gcpu,
                       "rss": rss, "peak": peak, "load": (load0, b.load())}
                at_once(n, lambda i: b.hub_remove(hub.url, names[i][0], names[i][1], hub.token, args.timeout))
                return out

            def bare_arm(n: int, r: int) -> dict:
                cids: list[str] = []
                load0 = b.load()

                def one(i):
                    t, cid = b.bare_run(image, f"{b.PREFIX}cbare-n{n}r{r}i{i}", args.timeout, CLIENT_INTERVAL)
                    cids.append(cid)
                    return t

                times, errors, wall = at_once(n, one)
                out = {"arm": "bare", "n": n, "times": times, "errors": errors, "wall": wall,
                       "load": (load0, b.load())}
                b.bare_remove(*cids)
                b.bare_cleanup()
                return out

            for r in range(args.rounds):
                for n in args.at_once:
                    arms = (hub_arm, bare_arm) if r % 2 == 0 else (bare_arm, hub_arm)
                    for arm in arms:
                        res = arm(n, r)
                        results.append(res)
                        s = b.summary(res["times"])
                        extra = (f", hub CPU {res['cpu']:.1f} s (with proxy, service, relay {res['gcpu']:.1f} s), RSS {res['rss']:.0f} MB (peak {res['peak']:.0f})"
                                 if res["arm"] == "hub" else "")
                        print(f"{res['arm']:4s} {n:3d} at once: failures {len(res['errors'])}, p50 "
                              f"{s['median']:.2f} s, p95 {s['p95']:.2f} s, max {s['max']:.2f} s, wall "
                              f"{res['wall']:.1f} s, load {res['load'][0]} -> {res['load'][1]}{extra}", flush=True)
                        for e in res["errors"][:5]:
                            print(f"   failure {e}")
        finally:
            if args.keep_log:
                subprocess.run(["cp", str(hub.log), args.keep_log])
            hub.stop()
            b.cleanup_engine(engine, prefix=b.PREFIX)
            b.bare_cleanup()

    print(f"\nload average at the end: {b.load()}")
    print("| N at once | arm | failures | p50 s | p95 s | max s | wall s | hub CPU s | hub+proxy+service+relay CPU s | hub peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        s = b.summary(res["times"])
        cpu = f"{res['cpu']:.1f} | {res['gcpu']:.1f}" if "cpu" in res else "- | -"
        peak = f"{res['peak']:.0f}" if "peak" in res else "-"
        print(f"| {res['n']} | {res['arm']} | {len(res['errors'])} | {s['median']:.2f} | {s['p95']:.2f} | "
              f"{s['max']:.2f} | {res['wall']:.1f} | {cpu} | {peak} |")
    print()
    for n in args.at_once:
        for r in range(args.rounds):
            h = [x for x in results if x["arm"] == "hub" and x["n"] == n][r]
            bb = [x for x in results if x["arm"] == "bare" and x["n"] == n][r]
            sh, sb = b.summary(h["times"]), b.summary(bb["times"])
            print(f"N={n} round {r + 1}: hub/bare p50 {sh['median'] / sb['median']:.2f}, p95 "
                  f"{sh['p95'] / sb['p95']:.2f} (target <= 1.15); hub p95 / single hub spawn "
                  f"{sh['p95'] / s1['median']:.2f} (target <= 3); failures hub {len(h['errors'])}, "
                  f"bare {len(bb['errors'])} (target 0)")


if __name__ == "__main__":
    main()
