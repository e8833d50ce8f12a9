"""The member's start-up script: how an instance runs it before its server, and how the hub
reads what it printed. Pure: both backends build the same command and read the same output.

Why a wrapper command and not an image hook: the script must run at every start, in any image
(managed or saved), as the instance user and with the instance's environment, and its result
must decide whether the server starts at all. So the server command ``cmd`` becomes

    sh -c WRAPPER dsw-startup cmd...

The wrapper runs the script with bash (sh when the image has no bash), writes its output to
``~/.dsw/startup.log`` (the member finds it there after the start) and to the instance's own
output with a marker on each line, so the hub can copy the lines into the spawn progress
from the engine's log (``docker logs`` / the pod log). Then it prints an end line with the
script's exit status: 0 execs the server, anything else ends the instance with that status,
and the hub fails the start with the last lines.

The script travels in the environment (``DSW_STARTUP_SCRIPT``), which the wrapper drops
before the server starts; saving an instance as an image blanks the variables the image
did not have (snapshots._scrub_env), so a saved image never carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV = "DSW_STARTUP_SCRIPT"
LINE = "dsw-startup| "
END = "dsw-startup-end "
LOG = "~/.dsw/startup.log"
#: progress lines copied per start; the whole output is in the log file
MAX_PROGRESS_LINES = 200
#: lines of output a failed start shows
FAILURE_LINES = 10

# POSIX sh (free-form images may lack bash). The script writes to the log file, not to a pipe:
# a process it leaves in the background (a TensorBoard, say) keeps writing there without holding
# the start up. The loop copies new complete lines to the instance's output until the script's
# status file appears. A home that cannot be written (read-only) falls back to /tmp.
WRAPPER = r"""
script="$DSW_STARTUP_SCRIPT"; unset DSW_STARTUP_SCRIPT
dir="${HOME:-/tmp}/.dsw"
{ mkdir -p "$dir" && : > "$dir/startup.log"; } 2>/dev/null || { dir=/tmp; : > "$dir/startup.log"; }
log="$dir/startup.log"; status="$dir/.startup-status"; rm -f "$status"
if command -v bash >/dev/null 2>&1; then run=bash; else run=sh; fi
{ "$run" -c "$script" dsw-startup </dev/null >>"$log" 2>&1; echo "$?" > "$status"; } &
shown=0
show() {
  n=$(wc -l < "$log")
  if [ "$n" -gt "$shown" ]; then sed -n "$((shown + 1)),${n}p" "$log" | sed 's/^/dsw-startup| /'; shown=$n; fi
}
while [ ! -s "$status" ]; do sleep 0.3; show; done
rc=$(cat "$status"); rm -f "$status"
[ -z "$(tail -c 1 "$log")" ] || echo >> "$log"
show
echo "dsw-startup-end $rc"
[ "$rc" = 0 ] || exit "$rc"
exec "$@"
"""


def command(cmd: list[str], script: str) -> list[str]:
    """The instance's command: ``cmd`` itself without a script, else the wrapper around it."""
    if not script:
        return list(cmd)
    return ["sh", "-c", WRAPPER, "dsw-startup", *cmd]


def environment(script: str) -> dict[str, str]:
    return {ENV: script} if script else {}


@dataclass(frozen=True)
class Output:
    """What the script printed so far, and its exit status once it ended (None: still running)."""

    lines: tuple[str, ...]
    status: int | None

    def failure(self) -> str:
        """The message a failed start shows: status and last lines."""
        tail = self.lines[-FAILURE_LINES:]
        shown = ("; its last lines: " + " | ".join(tail)) if tail else "; it printed nothing"
        return (f"The start-up script failed with exit status {self.status}{shown} "
                f"(the whole output is in {LOG}). The instance was not started.")


def read(output: str) -> Output:
    """Parse the instance's output (engine log) for the wrapper's lines."""
    lines, status = [], None
    for raw in output.splitlines():
        if raw.startswith(LINE):
            lines.append(raw[len(LINE):])
        elif raw.startswith(END) and status is None:
            try:
                status = int(raw[len(END):].strip() or 1)
            except ValueError:
                status = 1
            break
    return Output(tuple(lines), status)
