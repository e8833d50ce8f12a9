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
