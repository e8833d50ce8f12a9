"""Server-side setup shared by every DSW instance kind (read by jupyter-server at start).

Terminal instances: JupyterLab 4 has no URL that opens a terminal, so we write a workspace
whose layout is a single terminal; the hub sends the browser to <base>/lab/workspaces/dsw-terminal.
"""

import json
import os

c = get_config()  # noqa: F821

if os.environ.get("DSW_INSTANCE_KIND") == "terminal":
    try:
        from jupyterlab.commands import get_workspaces_dir
        from jupyterlab_server.workspaces_handler import WorkspacesManager

        name, term = "dsw-terminal", "1"
        layout = {
            "data": {
                "layout-restorer:data": {
                    "main": {"dock": {"type": "tab-area", "currentIndex": 0, "widgets": [f"terminal:{term}"]},
                             "current": f"terminal:{term}"},
                    "left": {"collapsed": True, "visible": True, "widgets": []},
                },
                f"terminal:{term}": {"data": {"name": term}},
            },
            "metadata": {"id": name},
        }
        WorkspacesManager(get_workspaces_dir()).save(name, json.dumps(layout))
    except Exception as exc:  # never keep the server from starting
        print(f"dsw: could not prepare the terminal workspace: {exc}")

# What counts as activity. jupyterhub-singleuser reports the server's last activity to the hub
# (every JUPYTERHUB_ACTIVITY_INTERVAL seconds; the hub sets it from the idle culler's check
# period), and the hub's idle culler stops an instance after its own limit without any. The
# server already counts API requests, kernel messages (execution, output), terminal input and
# output, and traffic proxied by jupyter-server-proxy (VSCode: the editor's websocket messages,
# such as typing). A kernel running code that prints nothing (a long computation, a sleep) sends
# no messages, so the server would call it idle and the culler would stop it mid-run, with or
# without a browser connected: here a kernel that is busy counts as active for as long as it runs.
try:
    from jupyter_server._tz import utcnow
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    class BusyKernelsAreActive(AsyncMappingKernelManager):
        """The server's kernel manager, whose ``last_kernel_activity`` (one of the sources of
        the server's last activity) is now while any kernel is busy."""

        @property
        def last_kernel_activity(self):
            if any(getattr(k, "execution_state", None) == "busy" for k in self._kernels.values()):
                return utcnow()
            return self._dsw_last_kernel_activity

        @last_kernel_activity.setter
        def last_kernel_activity(self, value):
            self._dsw_last_kernel_activity = value

    c.ServerApp.kernel_manager_class = BusyKernelsAreActive
except Exception as exc:  # never keep the server from starting
    print(f"dsw: busy kernels will not count as activity: {exc}")
