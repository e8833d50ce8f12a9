"""Runtime state that must survive restarts, through SQLAlchemy (SQLite by default).

The YAML catalogue is the baseline; these tables hold what changes at run time:
membership changes, allocations, member quotas, quota reservations, saved images and the
audit log.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint, create_engine,
                        event)
from sqlalchemy.engine import Engine
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
    """Resources held by one instance from admission until it stops or fails."""

    __tablename__ = "reservations"
    __table_args__ = (UniqueConstraint("user", "server"),)
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


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL. SQLite transactions start IMMEDIATE (write lock first), so a
    read-check-write such as quota admission is atomic across threads and processes."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"isolation_level": None, "timeout": 30})

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, isolation_level="SERIALIZABLE")
    Base.metadata.create_all(engine)
    return engine


def sessions(url: str) -> sessionmaker:
    return sessionmaker(engine_for(url), expire_on_commit=False)
