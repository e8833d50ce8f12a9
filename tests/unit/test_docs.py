"""What the README promises matches the code."""

import subprocess
import sys
from pathlib import Path

from spawner_ext.roles import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_role_table_is_generated_from_roles_py():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_readme_commands_exist_and_ci_calls_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/up.sh" in readme and "scripts/test.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_check_catalog_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "spawner_ext.cli", "check-catalog", str(ROOT / "hub_config" / "catalog.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "c.yaml"
    bad.write_text("instance_types:\n  - {id: x, cpu: 4 cores, memory: 1Gi}\n")
    out = subprocess.run([sys.executable, "-m", "spawner_ext.cli", "check-catalog", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "instance_types[0].cpu" in out.stderr and "not a quantity" in out.stderr
