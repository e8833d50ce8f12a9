"""Instance lifecycle policy, pure: idle time at three levels, scheduled stops, start-up scripts.

Idle shutdown has three levels, each bounded by the one above it:

* the platform: ``idle_default_minutes`` (what an instance gets when nobody chose; 0 = never)
  and ``idle_max_minutes`` (the longest a workspace may allow);
* the workspace: ``idle_max_minutes`` set by its owners and admins (None: the platform's bound);
* the instance: the member's choice in the spawn form or API, within the workspace's bound.

Minutes may be fractional (0.5 is 30 s) so a test can run a real culler with a short
window through the same API a member uses. Every refusal is an ``OptionsError`` naming
the field, with status 400, like the rest of the options.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from .errors import OptionsError

STARTUP_SCRIPT_MAX_BYTES = 16 * 1024
#: the longest a scheduled stop may lie ahead ("stop in N hours"), one week
MAX_STOP_HOURS = 24 * 7


@dataclass(frozen=True)
class IdleBounds:
    """The platform level (HubSettings ``idle_default_minutes`` / ``idle_max_minutes``)."""

    default_minutes: float = 0.0  # 0: an instance nobody chose a limit for is never culled
    max_minutes: float = 24 * 60  # the longest idle time a workspace may allow
    #: the shortest limit anyone may choose: instances report activity and the culler looks
    #: once per check period, so a shorter limit would stop instances that are in use
    min_minutes: float = 0.0

    def too_short(self, minutes: float, field: str) -> None:
        if 0 < minutes < self.min_minutes:
            raise OptionsError(400, field, f"at least {self.min_minutes:g} minutes (activity is checked every "
                                           f"{self.min_minutes * 30:g} s; a shorter limit would stop instances in use)")


def _number(value: Any, field: str) -> float:
    if isinstance(value, list) and len(value) == 1:  # form fields arrive as lists
        value = value[0]
    if isinstance(value, bool):
        raise OptionsError(400, field, "must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionsError(400, field, f"must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionsError(400, field, "must be a finite number")
    return float(value)


def workspace_idle_max(value: Any, bounds: IdleBounds, field: str = "idle_max_minutes") -> float | None:
    """A workspace's idle bound as set by its owners/admins: None clears it (the platform's bound
    applies), else a number of minutes > 0 and <= the platform's ``max_minutes``."""
    if value is None or value == "":
        return None
    minutes = _number(value, field)
    if minutes <= 0:
        raise OptionsError(400, field, "must be more than 0 minutes (clear it to use the platform's bound)")
    if minutes > bounds.max_minutes:
        raise OptionsError(400, field, f"at most {bounds.max_minutes:g} minutes (the platform's bound)")
    bounds.too_short(minutes, field)
    return minutes


def effective_idle(choice: Any, workspace_max: float | None, bounds: IdleBounds,
                   field: str = "idle_minutes") -> float:
    """The idle limit one instance runs with, in minutes; 0 means never culled.

    ``choice`` is the member's (None: not chosen). A choice must be > 0 and within the
    workspace's bound (or the platform's, when the workspace set none); 0 ("never") is
    accepted only when no bound applies at all. Not chosen: the platform default, capped by
    the workspace's bound."""
    cap = workspace_max if workspace_max is not None else None
    if choice is None or choice == "" or choice == [""]:
        default = bounds.default_minutes
        if cap is None:
            return default
        return cap if default <= 0 else min(default, cap)
    minutes = _number(choice, field)
    limit = cap if cap is not None else bounds.max_minutes
    if minutes < 0:
        raise OptionsError(400, field, "must be 0 (never) or more minutes")
    if minutes == 0:
        if limit:
            raise OptionsError(400, field, f"this workspace stops idle instances: choose 1 to {limit:g} minutes")
        return 0.0
    if limit and minutes > limit:
        who = "the workspace's" if cap is not None else "the platform's"
        raise OptionsError(400, field, f"at most {limit:g} minutes ({who} idle limit)")
    bounds.too_short(minutes, field)
    return minutes


def stop_time(*, at: Any = None, in_hours: Any = None, now: dt.datetime | None = None,
              field_at: str = "stop_at", field_in: str = "stop_in_hours") -> dt.datetime:
    """When a scheduled stop fires, as naive UTC (how the state database keeps times).

    ``at`` is an ISO 8601 time (with a zone, or UTC when none), ``in_hours`` a number of
    hours from ``now``; exactly one must be given, in the future and within a week."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    given = [name for name, v in ((field_at, at), (field_in, in_hours)) if v not in (None, "", [""])]
    if len(given) != 1:
        raise OptionsError(400, field_at, f"give exactly one of {field_at} or {field_in}")
    if at not in (None, "", [""]):
        if isinstance(at, list) and len(at) == 1:
            at = at[0]
        if not isinstance(at, str):
            raise OptionsError(400, field_at, "must be an ISO 8601 time such as 2026-12-01T18:00:00Z")
        try:
            when = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise OptionsError(400, field_at, f"not an ISO 8601 time: {at!r}") from None
        if when.tzinfo is not None:
            when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        field = field_at
    else:
        hours = _number(in_hours, field_in)
        if hours <= 0:
            raise OptionsError(400, field_in, "must be more than 0 hours")
        if hours > MAX_STOP_HOURS:
            raise OptionsError(400, field_in, f"at most {MAX_STOP_HOURS} hours")
        when = now + dt.timedelta(hours=hours)
        field = field_in
    if when <= now:
        raise OptionsError(400, field, "must be in the future")
    if when > now + dt.timedelta(hours=MAX_STOP_HOURS, seconds=1):
        raise OptionsError(400, field, f"at most {MAX_STOP_HOURS} hours ahead")
    return when


def startup_script(value: Any, field: str = "startup_script") -> str:
    """The member's start-up script: text of at most 16 KiB (UTF-8), "" for none."""
    if value is None:
        return ""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise OptionsError(400, field, "must be text")
    script = value.replace("\r\n", "\n")
    if "\x00" in script:
        raise OptionsError(400, field, "must not contain NUL characters")
    size = len(script.encode())
    if size > STARTUP_SCRIPT_MAX_BYTES:
        raise OptionsError(400, field, f"is {size} bytes; at most {STARTUP_SCRIPT_MAX_BYTES} (16 KiB)")
    return script if script.strip() else ""
