"""Every README example that calls the hub or the DSW API runs as written (issue 13).

The fenced shell blocks of README.md that call ``curl`` on ``/hub/api`` or ``/services/dsw``
run, in README order, against a real hub started from the example catalogue
(hub_config/catalog.yaml) with the real engine. Only the hub's address
(``http://localhost:8000``) and the tokens (``$DSW_ADMIN_TOKEN``: the hub's automation token;
``$MY_TOKEN``: alice's token) are substituted. Each curl call must get a 2xx, or exactly
the status its line names in a ``# -> NNN`` comment (a documented refusal).

A block that cannot run here is marked in README.md by ``<!-- readme-test: skip (reason) -->``
directly before its fence. Only blocks that need a real Kubernetes cluster (helm, kubectl, or
a hub other than this machine's) may carry the mark; the exemptions are printed by name.
A new API example without the mark runs, and fails if it does not work as written.
"""

from __future__ import annotations

import os
import re
import warnings
import subprocess
from dataclasses import dataclass

import pytest

from .conftest import cleanup_engine
from .hubproc import ROOT, Hub

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
DOC_HUB = "http://localhost:8000"
SKIP = re.compile(r"^<!-- readme-test: skip \((?P<reason>.+)\) -->$")
FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
EXPECT = re.compile(r"#\s*->\s*(?P<status>[1-5][0-9][0-9])\b")
USERS = ("alice",)  # whose instances the examples start (removed afterwards)


@dataclass
class Block:
    name: str          # "<section> #<n>" (n counts the section's shell blocks)
    line: int          # README line of the first code line
    code: str
    skip: str | None   # the reason of a readme-test skip mark

    @property
    def calls_api(self) -> bool:
        return "curl" in self.code and ("/hub/api" in self.code or "/services/dsw" in self.code)

    @property
    def needs_cluster(self) -> bool:
        if re.search(r"\b(helm|kubectl)\b", self.code):
            return True
        hosts = re.findall(r"https?://([^/\s:'\"]+)", self.code)
        return any(h not in ("127.0.0.1", "localhost") for h in hosts)


def readme_blocks(text: str) -> list[Block]:
    blocks, section, count, lines = [], "", {}, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif FENCE.match(line):
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
            prev = lines[i - 1].strip() if i else ""
            mark = SKIP.match(prev)
            count[section] = count.get(section, 0) + 1
            blocks.append(Block(f"{section} #{count[section]}", start + 1, "\n".join(lines[start:end]),
                                mark.group("reason") if mark else None))
            i = end
        i += 1
    return blocks


def commands(code: str) -> list[tuple[int, int, str]]:
    """Logical commands (first line, last line, text; 1-based in the block): lines continued
    by a trailing backslash or pipe belong together."""
    out, lines, i = [], code.splitlines(), 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and re.search(r"(\\|\|)\s*$", lines[j].split(" #")[0].rstrip()):
            j += 1
        out.append((i + 1, j + 1, "\n".join(lines[i:j + 1])))
        i = j + 1
    return out


BLOCKS = readme_blocks(README.read_text())
API_BLOCKS = [b for b in BLOCKS if b.calls_api]
RUNNABLE = [b for b in API_BLOCKS if b.skip is None]


def test_skip_marks_are_exactly_the_blocks_that_need_a_cluster():
    marked = [b for b in BLOCKS if b.skip is not None]
    exempt = "README blocks not run (readme-test: skip):\n" + "\n".join(
        f"  - {b.name} (README.md:{b.line}): {b.skip}" for b in marked)
    print("\n" + exempt)
    warnings.warn(exempt, UserWarning, stacklevel=1)  # in pytest's summary, also without -s
    assert [b.name for b in marked if not b.needs_cluster] == [], "a skip mark on a block that can run here"
    assert [b.name for b in API_BLOCKS if b.needs_cluster and b.skip is None] == [], \
        "an API example that needs a cluster without a skip mark"
    # the sections this test exists for are really run
    sections = {b.name.rsplit(" #", 1)[0] for b in RUNNABLE}
    assert {"Automation", "Allocations, quotas and the DSW service", "Save an instance as an image"} <= sections


@pytest.fixture(scope="module")
def readme_hub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("readme")
    for user in USERS:
        cleanup_engine(engine, user)
    h = Hub(tmp / "state", ROOT / "hub_config" / "catalog.yaml", engine_url, subdomains=True)  # as up.sh runs it
    h.start()
    h.wait_service()
    h.tokens = {"DSW_ADMIN_TOKEN": h.token, "MY_TOKEN": h.user_token("alice")}
    yield h
    for user in USERS:
        for name in (h.api("GET", f"/users/{user}").json().get("servers") or {}):
            h.stop_server(user, name)
    h.stop()
    for user in USERS:
        cleanup_engine(engine, user)


# curl as written, plus: silent, and one line per call with the caller's line and the status
WRAPPER = r'''set -euo pipefail
curl() {
  local body code
  body=$(mktemp)
  code=$(command curl -sS --max-time 300 -o "$body" -w '%{http_code}' "$@") || { cat "$body" >&2; rm -f "$body"; return 1; }
  cat "$body"; echo; rm -f "$body"
  echo "${BASH_LINENO[0]} $code" >> "$README_TEST_CALLS"
}
'''


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_readme_example_runs_as_written(readme_hub, block, tmp_path):
    assert DOC_HUB in block.code, f"{block.name}: examples address the hub as {DOC_HUB}"
    script = WRAPPER + block.code.replace(DOC_HUB, readme_hub.url) + "\n"
    offset = WRAPPER.count("\n")
    calls = tmp_path / "calls"
    calls.touch()
    env = {**os.environ, **readme_hub.tokens, "README_TEST_CALLS": str(calls)}
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    shown = f"{block.name} (README.md:{block.line}) exited {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert run.returncode == 0, shown
    made = [(int(line) - offset, int(code)) for line, code in
            (entry.split() for entry in calls.read_text().splitlines())]
    for first, last, text in commands(block.code):
        if not re.search(r"\bcurl\b", text):
            continue
        got = [code for line, code in made if first <= line <= last]
        expected = EXPECT.search(text)
        assert got, f"{block.name}: line {first} did not run\n{shown}"
        for code in got:
            if expected:
                assert code == int(expected.group("status")), f"{block.name}: line {first} got {code}\n{shown}"
            else:
                assert 200 <= code < 300, f"{block.name}: line {first} got {code}\n{shown}"
