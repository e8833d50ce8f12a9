"""Runtime state that must survive restarts, through SQLAlchemy (SQLite by default).

The YAML catalogue is the baseline; these tables hold what changes at run time:
membership changes, allocations, member quotas, quota reservations, saved images and the
audit log.

The schema is managed with Alembic (``migrations/``, upgraded whenever a process opens the
database: the hub at start, its DSW service, the chart's hub pod). Change a table here
AND add a revision; tests/state checks that the two agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from functools import lru_cache

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint,
                        create_engine, event, inspect, text)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class MemberChange(Base):
    """A membership set at run time (service or SSO); role None means removed."""

    __tablename__ = "member_changes"
    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="admin")  # admin | sso
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Allocation(Base):
    """Quota of a resource group given to a workspace by a platform admin."""

    __tablename__ = "allocations"
    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_group: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpu: Mapped[float] = mapped_column(Float)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(Integer)


class MemberQuota(Base):
    """A cap on one member inside a workspace's allocation, set by its owner/admins."""

    __tablename__ = "member_quotas"
    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    resource_group: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpu: Mapped[float] = mapped_column(Float)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(Integer)


class Reservation(Base):
    """Resources held by one instance from admission until it stops or fails.

    ``ix_reservations_usage`` (revision 0004) covers quota.usage's sums: the workspace's and the
    member's usage read only their own index entries, without the table (with the group index
    alone each sum read every reservation of the group: benchmarks/kube_scale.py)."""

    __tablename__ = "reservations"
    __table_args__ = (UniqueConstraint("user", "server"),
                      Index("ix_reservations_usage", "resource_group", "workspace", "user", "cpu", "memory", "gpu"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(128))
    server: Mapped[str] = mapped_column(String(255))
    resource_group: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="")
    instance_type: Mapped[str] = mapped_column(String(64), default="")
    cpu: Mapped[float] = mapped_column(Float)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpu: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class WorkspaceShare(Base):
    """An instance its creator shared with the workspace (kept in sync with membership)."""

    __tablename__ = "workspace_shares"
    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    server: Mapped[str] = mapped_column(String(255), primary_key=True)


class SavedImage(Base):
    """An instance saved as an image (spawner_ext/snapshots.py): private to its owner
    until a workspace owner/admin publishes it to the whole workspace."""

    __tablename__ = "saved_images"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # saved-<hex>: the spawn option `image`
    workspace: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(512))  # the image reference
    base_image: Mapped[str] = mapped_column(String(64), default="")  # catalogue id it was made from
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # JSON {"added": {name: version}, "changed": {name: [base, now]}, "removed": {name: version}}:
    # the `pip list` difference from the base image at save time (revision 0002)
    packages: Mapped[str] = mapped_column(Text, default="", server_default="")
    # bytes of the instance's own layer pushed by the image agent (0: local engine commit)
    layer_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class WorkspacePolicy(Base):
    """A workspace's lifecycle policy set at run time by its owner/admins (revision 0003):
    the longest idle time a member may choose (None: the platform's bound)."""

    __tablename__ = "workspace_policies"
    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    idle_max_minutes: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class InstanceLifecycle(Base):
    """One instance's lifecycle (spawner_ext/instance_record.py, revision 0003): the idle limit it
    runs with, its scheduled stop, why a stop is about to happen (the intent, written by
    whoever asks the hub to stop it: idle culler, schedule timer, ops, quota reconcile) and
    why it last stopped (written by the hub's post-stop hook, which consumes the intent)."""

    __tablename__ = "instance_lifecycle"
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    server: Mapped[str] = mapped_column(String(255), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(64), index=True, default="")
    idle_minutes: Mapped[float] = mapped_column(Float, default=0.0)  # 0: never culled
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    stop_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    stop_at_by: Mapped[str] = mapped_column(String(128), default="")
    intent: Mapped[str] = mapped_column(String(16), default="")
    intent_by: Mapped[str] = mapped_column(String(128), default="")
    intent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_stop_reason: Mapped[str] = mapped_column(String(16), default="")
    last_stop_by: Mapped[str] = mapped_column(String(128), default="")
    last_stop_detail: Mapped[str] = mapped_column(Text, default="")
    last_stopped_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    workspace: Mapped[str] = mapped_column(String(64), default="")
    target: Mapped[str] = mapped_column(String(255), default="")
    outcome: Mapped[str] = mapped_column(String(16))  # ok | refused
    detail: Mapped[str] = mapped_column(Text, default="")


#: Alembic's version table for these tables. Not ``alembic_version``: on Kubernetes the
#: state shares the hub's database, where JupyterHub keeps its own ``alembic_version``.
VERSION_TABLE = "dsw_alembic_version"
#: The revision that is exactly the schema main made with ``create_all`` before migrations.
BASE_REVISION = "0001"
BASE_TABLES = frozenset({"member_changes", "allocations", "member_quotas", "reservations", "workspace_shares",
                         "saved_images", "audit_events"})
_MIGRATION_LOCK = "dsw-state-migrations"
log = logging.getLogger(__name__)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "spawner_ext.catalog:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def upgrade(engine: Engine) -> None:
    """Bring the state tables to the newest revision, once, whoever opens the database first.

    One transaction under a lock, so the hub, its DSW service and test threads opening a
    fresh database together do not race: PostgreSQL takes an advisory lock (at READ
    COMMITTED, so what the lock holder before us committed is visible once we have it);
    SQLite's transaction begins IMMEDIATE, i.e. with the file's write lock.

    A database made before migrations (the state tables, no version table) is recognised
    and stamped at the base revision instead of being created again; then it is upgraded
    like any other.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(_MIGRATION_LOCK)})
            config = _alembic_config(conn)
            tables = set(inspect(conn).get_table_names())
            if VERSION_TABLE not in tables and tables & BASE_TABLES:
                if missing := BASE_TABLES - tables:
                    raise RuntimeError(
                        f"state database {engine.url.render_as_string(hide_password=True)} has some DSW tables but "
                        f"not {', '.join(sorted(missing))}: not made by a known version, refusing to guess")
                log.info("state database made before migrations: stamping revision %s", BASE_REVISION)
                command.stamp(config, BASE_REVISION)
            command.upgrade(config, "head")


def open_engine(url: str) -> Engine:
    """A new engine with the schema upgraded. SQLite transactions start IMMEDIATE (write
    lock first), so a read-check-write such as quota admission is atomic across threads
    and processes; on PostgreSQL quota.admit takes a lock per resource group."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"isolation_level": None, "timeout": 30})

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, isolation_level="SERIALIZABLE")
    upgrade(engine)
    return engine


#: One engine per URL for the process.
engine_for = lru_cache(maxsize=8)(open_engine)


def sessions(url: str) -> sessionmaker:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def _read_engine(url: str) -> Engine:
    """Pages and GET endpoints only read: on SQLite they begin DEFERRED and so never queue
    behind the write lock that every admission, audit entry and culler intent takes (with
    BEGIN IMMEDIATE, 16 readers at once waited on each other and on every writer:
    benchmarks/api_latency.py). Other databases read at their own isolation on the same engine."""
    engine = engine_for(url)  # the schema, upgraded once
    if not url.startswith("sqlite"):
        return engine
    reader = create_engine(url, connect_args={"isolation_level": None, "timeout": 30})

    @event.listens_for(reader, "begin")
    def _begin_deferred(conn):
        conn.exec_driver_sql("BEGIN")
    return reader


def read_sessions(url: str) -> sessionmaker:
    """Sessions for reading only: a write through one is a mistake (it would not be atomic
    with the reads before it on SQLite)."""
    return sessionmaker(_read_engine(url), expire_on_commit=False)
