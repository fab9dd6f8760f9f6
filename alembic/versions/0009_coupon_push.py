"""coupon push: a store's discount API (Shopify, WooCommerce), and when a coupon reached it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.add_column(sa.Column("coupon_platform", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("coupon_api_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("coupon_api_token", sa.String(length=500), nullable=True))
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pushed_at", store.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("coupon", schema=None) as batch_op:
        batch_op.drop_column("pushed_at")
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_column("coupon_api_token")
        batch_op.drop_column("coupon_api_url")
        batch_op.drop_column("coupon_platform")
