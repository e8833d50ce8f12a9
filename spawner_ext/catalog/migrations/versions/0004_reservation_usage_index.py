"""A covering index for quota usage: (resource_group, workspace, user, cpu, memory, gpu).

Every admission sums the reservations of the resource group, of the workspace in it and of the
member in it (quota.usage). With only the single-column indexes, the workspace's and the
member's sums went through ix_reservations_resource_group and read every reservation of the
group from the table, so an admission cost more the more instances ran (benchmarks/kube_scale.py:
the three sums took 0.76 ms with no instance, 1.14 ms with 1,000 and 2.5 ms with 5,000 on
SQLite). With this index each sum reads only index entries, and the workspace's and the
member's only their own.

Additive: one index, nothing existing changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reservations_usage", "reservations",
                    ["resource_group", "workspace", "user", "cpu", "memory", "gpu"])


def downgrade() -> None:
    op.drop_index("ix_reservations_usage", "reservations")
