"""Instance lifecycle policies: a workspace's idle bound set at run time, and per instance its
idle limit, scheduled stop, stop intent and the reason it last stopped.

Additive: two new tables, nothing existing changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspace_policies",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("idle_max_minutes", sa.Float(), nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "instance_lifecycle",
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("server", sa.String(255), primary_key=True),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("idle_minutes", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("stop_at", sa.DateTime(), nullable=True),
        sa.Column("stop_at_by", sa.String(128), nullable=False),
        sa.Column("intent", sa.String(16), nullable=False),
        sa.Column("intent_by", sa.String(128), nullable=False),
        sa.Column("intent_at", sa.DateTime(), nullable=True),
        sa.Column("last_stop_reason", sa.String(16), nullable=False),
        sa.Column("last_stop_by", sa.String(128), nullable=False),
        sa.Column("last_stop_detail", sa.Text(), nullable=False),
        sa.Column("last_stopped_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_instance_lifecycle_workspace", "instance_lifecycle", ["workspace"])
    op.create_index("ix_instance_lifecycle_stop_at", "instance_lifecycle", ["stop_at"])


def downgrade() -> None:
    op.drop_index("ix_instance_lifecycle_stop_at", "instance_lifecycle")
    op.drop_index("ix_instance_lifecycle_workspace", "instance_lifecycle")
    op.drop_table("instance_lifecycle")
    op.drop_table("workspace_policies")
