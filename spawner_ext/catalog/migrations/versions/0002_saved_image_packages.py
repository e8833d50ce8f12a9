"""Saved images record what a member installed: the package difference from the base image
(`pip list` of the image as built against `pip list` in the instance at save time, JSON)
and the bytes of the instance's own layer that were pushed (0 for a local engine commit).

Additive: existing rows get an empty difference and 0 bytes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saved_images") as batch:
        batch.add_column(sa.Column("packages", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("layer_bytes", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("saved_images") as batch:
        batch.drop_column("layer_bytes")
        batch.drop_column("packages")
