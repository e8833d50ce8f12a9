"""The state schema under Alembic, on SQLite and on a real PostgreSQL: a fresh database,
a database made by main before migrations (with rows in every table), the hub's own
database shared with JupyterHub, and concurrent first opens."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

from spawner_ext.catalog import db
from spawner_ext.catalog.db import (VERSION_TABLE, Allocation, AuditEvent, MemberChange, MemberQuota, Reservation,
                                    SavedImage, WorkspaceShare, head_revision, open_engine)

from .legacy import legacy_db

WHEN = dt.datetime(2026, 11, 1, 12, 30)


def version(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    finally:
        engine.dispose()


def schema_differences(url: str, metadata) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_a_fresh_database_gets_the_models_schema_at_head(state_url):
    """Models and migrations agree: what the revisions build is what db.py declares."""
    db.engine_for(state_url)
    assert version(state_url) == [head_revision()]
    assert schema_differences(state_url, db.Base.metadata) == []


def test_the_base_revision_is_the_schema_main_made_before_migrations(state_url):
    """Revision 0001 builds exactly what the pre-migration code's create_all built."""
    from alembic import command

    engine = create_engine(state_url)
    try:
        with engine.begin() as conn:
            command.upgrade(db._alembic_config(conn), db.BASE_REVISION)
    finally:
        engine.dispose()
    assert schema_differences(state_url, legacy_db().Base.metadata) == []


def fill_every_table(legacy, url: str) -> None:
    """Rows in all seven tables, written by the pre-migration code."""
    with legacy.sessions(url)() as s, s.begin():
        s.add_all([
            legacy.MemberChange(workspace="vision", user="mig-ann", role="developer", source="sso", changed_at=WHEN),
            legacy.MemberChange(workspace="vision", user="mig-bob", role=None, source="admin", changed_at=WHEN),
            legacy.Allocation(workspace="vision", resource_group="gpu-a10", cpu=32.5, memory=2**37, gpu=2),
            legacy.MemberQuota(workspace="vision", user="mig-ann", resource_group="gpu-a10", cpu=8, memory=2**35,
                               gpu=1),
            legacy.Reservation(workspace="vision", user="mig-ann", server="train", resource_group="gpu-a10",
                               kind="notebook", instance_type="gpu-1", cpu=8, memory=30 * 2**30, gpu=1,
                               created_at=WHEN),
            legacy.WorkspaceShare(workspace="vision", owner="mig-ann", server="train"),
            legacy.SavedImage(id="saved-0123abcd", workspace="vision", owner="mig-ann", name="with-torch",
                              image="localhost/dsw/saved:0123abcd", base_image="nb-gpu", created_at=WHEN,
                              published=True, size=123456789),
            legacy.AuditEvent(at=WHEN, actor="root", action="allocation.set", workspace="vision", target="gpu-a10",
                              outcome="ok", detail="gpu=2"),
        ])
    legacy.engine_for(url).dispose()


def test_a_database_from_before_migrations_is_stamped_and_keeps_every_row(state_url):
    legacy = legacy_db()
    fill_every_table(legacy, state_url)
    assert VERSION_TABLE not in inspect(create_engine(state_url)).get_table_names()

    sessions = db.sessions(state_url)
    assert version(state_url) == [head_revision()]
    with sessions() as s:
        assert {(r.user, r.role, r.source, r.changed_at) for r in s.scalars(select(MemberChange))} == {
            ("mig-ann", "developer", "sso", WHEN), ("mig-bob", None, "admin", WHEN)}
        assert [(r.workspace, r.resource_group, r.cpu, r.memory, r.gpu) for r in s.scalars(select(Allocation))] == [
            ("vision", "gpu-a10", 32.5, 2**37, 2)]
        assert [(r.user, r.cpu, r.memory, r.gpu) for r in s.scalars(select(MemberQuota))] == [
            ("mig-ann", 8, 2**35, 1)]
        assert [(r.user, r.server, r.kind, r.instance_type, r.cpu, r.memory, r.gpu, r.created_at)
                for r in s.scalars(select(Reservation))] == [
            ("mig-ann", "train", "notebook", "gpu-1", 8, 30 * 2**30, 1, WHEN)]
        assert [(r.workspace, r.owner, r.server) for r in s.scalars(select(WorkspaceShare))] == [
            ("vision", "mig-ann", "train")]
        assert [(r.id, r.name, r.image, r.base_image, r.published, r.size, r.created_at)
                for r in s.scalars(select(SavedImage))] == [
            ("saved-0123abcd", "with-torch", "localhost/dsw/saved:0123abcd", "nb-gpu", True, 123456789, WHEN)]
        assert [(r.actor, r.action, r.target, r.outcome, r.detail, r.at) for r in s.scalars(select(AuditEvent))] == [
            ("root", "allocation.set", "gpu-a10", "ok", "gpu=2", WHEN)]
    # the upgraded database still takes new rows (ids continue after the old ones)
    with sessions() as s, s.begin():
        s.add(AuditEvent(actor="root", action="check", outcome="ok"))
    with sessions() as s:
        assert [e.id for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))] == [1, 2]


def test_a_database_with_only_some_of_the_old_tables_is_refused_not_guessed(state_url):
    engine = create_engine(state_url)
    legacy_db().Base.metadata.tables["reservations"].create(engine)
    engine.dispose()
    with pytest.raises(RuntimeError, match="has some DSW tables but not allocations, audit_events, member_changes"):
        open_engine(state_url)


def test_the_state_shares_the_hub_database_with_jupyterhub(state_url):
    """On Kubernetes the state lives in the hub's database, where JupyterHub keeps its own
    alembic_version: each keeps its own revision, in either start order."""
    from jupyterhub import orm

    orm.new_session_factory(state_url)  # JupyterHub first: its tables, its alembic_version
    engine = create_engine(state_url)
    with engine.connect() as conn:
        hub_revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    db.engine_for(state_url)
    orm.new_session_factory(state_url)  # and the hub starting again afterwards
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [hub_revision]
    assert version(state_url) == [head_revision()]
    assert {"users", "servers", "reservations", "audit_events"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_dsw_state_first_then_jupyterhub(state_url):
    db.engine_for(state_url)
    from jupyterhub import orm
    orm.new_session_factory(state_url)
    assert version(state_url) == [head_revision()]


def _open_in_process(url, barrier, results):
    barrier.wait()
    try:
        open_engine(url).dispose()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(repr(exc))


def test_concurrent_first_opens_do_not_race(state_url):
    """The hub, its DSW service and more open a fresh database at the same moment: one
    upgrades, the others wait and find it done. Threads and processes, one barrier."""
    ctx = multiprocessing.get_context("spawn")
    threads_n, procs_n = 6, 4
    barrier, results = ctx.Barrier(threads_n + procs_n), ctx.Queue()
    procs = [ctx.Process(target=_open_in_process, args=(state_url, barrier, results)) for _ in range(procs_n)]
    threads = [threading.Thread(target=_open_in_process, args=(state_url, barrier, results))
               for _ in range(threads_n)]
    for worker in (*procs, *threads):
        worker.start()
    outcomes = [results.get(timeout=60) for _ in range(threads_n + procs_n)]
    for worker in (*procs, *threads):
        worker.join(timeout=60)
    assert outcomes == ["ok"] * (threads_n + procs_n)
    assert version(state_url) == [head_revision()]
    assert schema_differences(state_url, db.Base.metadata) == []
