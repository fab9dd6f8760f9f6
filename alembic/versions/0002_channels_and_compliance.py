"""channels and compliance

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_suppression_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression")),
        sa.UniqueConstraint(
            "store_id", "channel", "address", name=op.f("uq_suppression_store_id_channel_address")
        ),
    )
    op.create_table(
        "pushsubscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("p256dh", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("auth", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_pushsubscription_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_pushsubscription_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pushsubscription")),
        sa.UniqueConstraint(
            "store_id", "endpoint", name=op.f("uq_pushsubscription_store_id_endpoint")
        ),
    )
    with op.batch_alter_table("pushsubscription", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pushsubscription_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "coupon",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("decision_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("discount_pct", sa.Float(), nullable=False),
        sa.Column("expires_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decision.id"], name=op.f("fk_coupon_decision_id_decision")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"], name=op.f("fk_coupon_store_id_store")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_coupon_decision_id")),
        sa.UniqueConstraint("store_id", "code", name=op.f("uq_coupon_store_id_code")),
    )
    op.create_table(
        "open",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("opened_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["message.id"], name=op.f("fk_open_message_id_message")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open")),
    )
    with op.batch_alter_table("open", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_open_message_id"), ["message_id"], unique=False)

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("error_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(
            sa.Column("delivery_status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )

    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "country",
                sqlmodel.sql.sqltypes.AutoString(length=2),
                nullable=False,
                server_default="US",  # stores that exist already keep the US rules
            )
        )
        batch_op.add_column(
            sa.Column(
                "rules",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'{}'"),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_column("rules")
        batch_op.drop_column("country")

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("delivery_status")
        batch_op.drop_column("error_kind")

    with op.batch_alter_table("open", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_open_message_id"))

    op.drop_table("open")
    op.drop_table("coupon")
    with op.batch_alter_table("pushsubscription", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pushsubscription_customer_id"))

    op.drop_table("pushsubscription")
    op.drop_table("suppression")
