"""The state tables as main made them before migrations: the db.py of commit 5eead76,
loaded from git as a module of its own, so the upgrade tests start from a database made by
that code path and not by a copy that could drift."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

COMMIT = "5eead76"
ROOT = Path(__file__).resolve().parents[2]


def legacy_db() -> types.ModuleType:
    name = f"dsw_state_db_{COMMIT}"
    if name in sys.modules:
        return sys.modules[name]
    shown = subprocess.run(["git", "show", f"{COMMIT}:spawner_ext/catalog/db.py"], cwd=ROOT,
                           capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.fail(f"the upgrade tests read db.py of commit {COMMIT} from git: {shown.stderr.strip()}")
    module = types.ModuleType(name)
    module.__file__ = f"<git show {COMMIT}:spawner_ext/catalog/db.py>"
    sys.modules[name] = module  # dataclass-like machinery (SQLAlchemy's Mapped) resolves names through it
    exec(compile(shown.stdout, module.__file__, "exec"), module.__dict__)
    return module
