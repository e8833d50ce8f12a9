"""Lifecycle policy, pure (spawner_ext/policy.py) and the per-instance record
(spawner_ext/instance_record.py) on a real SQLite state database: what a member is refused,
naming the field, and what the workspace page will say about why an instance stopped."""

from __future__ import annotations

import datetime as dt

import pytest

from spawner_ext import instance_record, policy
from spawner_ext.catalog.db import AuditEvent, sessions
from spawner_ext.errors import OptionsError
from spawner_ext.instance_record import StopReason

BOUNDS = policy.IdleBounds(default_minutes=60, max_minutes=240)
NOW = dt.datetime(2026, 12, 2, 12, 0)


def refused(field, fn, *args, **kw):
    with pytest.raises(OptionsError) as info:
        fn(*args, **kw)
    assert info.value.status == 400 and info.value.field == field, info.value
    return info.value.message


def test_idle_levels():
    assert policy.effective_idle(None, None, BOUNDS) == 60          # platform default
    assert policy.effective_idle(None, 30, BOUNDS) == 30            # capped by the workspace
    assert policy.effective_idle(None, 90, BOUNDS) == 60
    assert policy.effective_idle("0.5", 30, BOUNDS) == 0.5          # the member's choice, from a form
    assert policy.effective_idle(["20"], 30, BOUNDS) == 20
    assert policy.effective_idle(None, None, policy.IdleBounds(0, 240)) == 0  # nobody chose: never


def test_a_member_cannot_choose_more_than_the_workspace_allows():
    assert "workspace's" in refused("idle_minutes", policy.effective_idle, 31, 30, BOUNDS)
    assert "platform's" in refused("idle_minutes", policy.effective_idle, 241, None, BOUNDS)
    assert "1 to 30" in refused("idle_minutes", policy.effective_idle, 0, 30, BOUNDS)  # "never" is more
    for bad in ("soon", True, float("inf"), float("nan"), -1, {"m": 1}):
        refused("idle_minutes", policy.effective_idle, bad, 30, BOUNDS)


def test_workspace_bound_within_the_platforms():
    assert policy.workspace_idle_max(120, BOUNDS) == 120
    assert policy.workspace_idle_max(None, BOUNDS) is None  # cleared: the platform's bound
    assert "platform" in refused("idle_max_minutes", policy.workspace_idle_max, 241, BOUNDS)
    refused("idle_max_minutes", policy.workspace_idle_max, 0, BOUNDS)
    refused("idle_max_minutes", policy.workspace_idle_max, "x", BOUNDS)


def test_scheduled_stop_times():
    assert policy.stop_time(in_hours=2, now=NOW) == NOW + dt.timedelta(hours=2)
    assert policy.stop_time(at="2026-12-02T18:00:00Z", now=NOW) == dt.datetime(2026, 12, 2, 18, 0)
    assert policy.stop_time(at="2026-12-02T20:00:00+02:00", now=NOW) == dt.datetime(2026, 12, 2, 18, 0)
    refused("stop_at", policy.stop_time, at="2026-12-02T14:00:00+02:00", now=NOW)  # the past
    refused("stop_at", policy.stop_time, at="tomorrow", now=NOW)
    refused("stop_at", policy.stop_time, now=NOW)  # neither
    refused("stop_at", policy.stop_time, at="2026-12-02T18:00:00Z", in_hours=1, now=NOW)  # both
    refused("stop_in_hours", policy.stop_time, in_hours=0, now=NOW)
    refused("stop_in_hours", policy.stop_time, in_hours=24 * 7 + 1, now=NOW)
    refused("stop_at", policy.stop_time, at="2027-01-30T00:00:00Z", now=NOW)  # over a week ahead


def test_startup_script_limit():
    script = "echo 'hi'; printf \"%s\\n\" $HOME\r\n"
    assert policy.startup_script(script) == "echo 'hi'; printf \"%s\\n\" $HOME\n"
    assert policy.startup_script("   \n") == "" and policy.startup_script(None) == ""
    assert policy.startup_script("é" * 8192) == "é" * 8192  # 16 KiB exactly, in UTF-8 bytes
    assert "16 KiB" in refused("startup_script", policy.startup_script, "é" * 8192 + "x")
    refused("startup_script", policy.startup_script, "a\x00b")
    refused("startup_script", policy.startup_script, 42)


@pytest.fixture
def db(tmp_path):
    return sessions(f"sqlite:///{tmp_path}/dsw.sqlite")


class Spec:  # the fields record_start reads from an InstanceSpec
    def __init__(self, user, server, stop_at=None):
        self.user, self.server, self.workspace, self.idle_minutes, self.stop_at = user, server, "ws", 30.0, stop_at


def audit(db):
    with db() as s:
        return [(e.actor, e.action, e.target) for e in s.query(AuditEvent)]


def test_why_it_stopped(db):
    instance_record.record_start(db, Spec("ann", "a"))
    assert instance_record.record_stop(db, "ann", "a").reason == StopReason.user  # nobody said otherwise
    instance_record.record_start(db, Spec("ann", "a"))
    last = instance_record.record_stop(db, "ann", "a", exit_status=137)
    assert (last.reason, last.detail) == (StopReason.died, "exit status 137")
    instance_record.record_start(db, Spec("ann", "a"))
    instance_record.mark_intent(db, "ann", "a", StopReason.ops, "olga")
    last = instance_record.record_stop(db, "ann", "a", exit_status=0)  # the intent wins over the poll
    assert (last.reason, last.by) == (StopReason.ops, "olga")
    assert audit(db) == [("hub", "stop-died", "ann/a")]  # ops stops are audited by the service


def test_a_stale_intent_is_not_believed(db):
    instance_record.record_start(db, Spec("bob", ""))
    instance_record.mark_intent(db, "bob", "", StopReason.idle, "idle-culler")
    with db() as s, s.begin():
        row = s.get(instance_record.InstanceLifecycle, ("bob", ""))
        row.intent_at -= instance_record.INTENT_TTL + dt.timedelta(seconds=1)  # its stop request failed long ago
    assert instance_record.record_stop(db, "bob", "").reason == StopReason.user


def test_schedules_fire_once_and_belong_to_one_instance(db):
    soon = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1)
    instance_record.record_start(db, Spec("ann", "x", stop_at=soon))
    instance_record.record_start(db, Spec("ann", "x-", stop_at=None))  # a name built to collide
    assert [(r.user, r.server, r.stop_at_by) for r in instance_record.due(db)] == [("ann", "x", "ann")]
    instance_record.mark_intent(db, "ann", "x", StopReason.schedule, "ann")
    assert instance_record.record_stop(db, "ann", "x").reason == StopReason.schedule
    assert instance_record.due(db) == []  # a stop clears the schedule
    assert not instance_record.set_stop_at(db, "nobody", "", soon, "ann")  # no such instance: nothing made
    assert instance_record.get(db, "nobody", "") is None


def test_no_limit_shorter_than_two_activity_checks():
    """Instances report activity once per culler check: a limit under two checks would stop
    instances in use, so member and workspace choices below it are refused naming the field."""
    bounds = policy.IdleBounds(default_minutes=0, max_minutes=240, min_minutes=10)
    assert "at least 10 minutes (activity is checked every 300 s" in refused(
        "idle_minutes", policy.effective_idle, 5, None, bounds)
    assert "at least 10 minutes" in refused("idle_max_minutes", policy.workspace_idle_max, 9.5, bounds)
    assert policy.effective_idle(10, None, bounds) == 10 and policy.workspace_idle_max(10, bounds) == 10
    assert policy.effective_idle(None, None, bounds) == 0  # nobody chose: the platform default (never)
