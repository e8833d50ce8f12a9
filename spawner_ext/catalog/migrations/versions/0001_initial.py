"""The state schema as main created it before migrations (commit 5eead76).

Frozen: this is what `Base.metadata.create_all` made, table by table, so a database from
then is stamped at this revision and later revisions apply to both alike. Change the
schema with a new revision, never here.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_changes",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "allocations",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("resource_group", sa.String(64), primary_key=True),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
    )
    op.create_table(
        "member_quotas",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("resource_group", sa.String(64), primary_key=True),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("resource_group", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("user", "server"),
    )
    op.create_index("ix_reservations_workspace", "reservations", ["workspace"])
    op.create_index("ix_reservations_resource_group", "reservations", ["resource_group"])
    op.create_table(
        "workspace_shares",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("server", sa.String(255), primary_key=True),
    )
    op.create_table(
        "saved_images",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("base_image", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_saved_images_workspace", "saved_images", ["workspace"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    for table in ("audit_events", "saved_images", "workspace_shares", "reservations", "member_quotas",
                  "allocations", "member_changes"):
        op.drop_table(table)
