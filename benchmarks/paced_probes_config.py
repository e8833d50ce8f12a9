# Hub-config-level subclass used by `concurrent_spawns.py --config-extra benchmarks/paced_probes_config.py`:
# paces readiness probes and exit checks across concurrent starts (proposed for spawner_ext/lifecycle.py).
# paced readiness probes as a hub-config-level subclass (the same code as proposed for lifecycle.py)
import asyncio, time
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from spawner_ext.local.spawner import DSWLocalSpawner

class PacedSpawner(DSWLocalSpawner):
    _probing = 0
    max_probe_rate = 50.0
    max_exit_check_rate = 10.0

    async def probe_until_up(self, url, exit_detail=None):
        http = AsyncHTTPClient()
        deadline = time.monotonic() + self.start_timeout
        next_check = time.monotonic() + 1
        PacedSpawner._probing += 1
        try:
            while time.monotonic() < deadline:
                try:
                    await http.fetch(url, request_timeout=2, connect_timeout=1)
                    return
                except HTTPClientError as exc:
                    if exc.code != 599:
                        return
                except OSError:
                    pass
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + max(1, PacedSpawner._probing / self.max_exit_check_rate)
                    status = await self.poll()
                    if status is not None:
                        detail = await exit_detail() if exit_detail else ""
                        raise web.HTTPError(500, log_message=f"the server exited with status {status} while starting"
                                                   + (f": {detail}" if detail else ""))
                await asyncio.sleep(max(self.ready_interval, PacedSpawner._probing / self.max_probe_rate))
        finally:
            PacedSpawner._probing -= 1
        raise web.HTTPError(500, log_message=f"the server did not answer within {self.start_timeout} s")

c.JupyterHub.spawner_class = PacedSpawner
