"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "store",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("api_key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store")),
        sa.UniqueConstraint("name", name=op.f("uq_store_name")),
    )
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_store_api_key_hash"), ["api_key_hash"], unique=True)

    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("locale", sqlmodel.sql.sqltypes.AutoString(length=35), nullable=True),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("consent_email", sa.Boolean(), nullable=True),
        sa.Column("consent_sms", sa.Boolean(), nullable=True),
        sa.Column("consent_push", sa.Boolean(), nullable=True),
        sa.Column("consent_night", sa.Boolean(), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_customer_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
        sa.UniqueConstraint(
            "store_id", "external_id", name=op.f("uq_customer_store_id_external_id")
        ),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("occurred_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"], name=op.f("fk_event_store_id_store")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
        sa.UniqueConstraint("store_id", "event_id", name=op.f("uq_event_store_id_event_id")),
    )
    op.create_table(
        "cart",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column(
            "items",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("restore_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("checkout_stage", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("device", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("last_event_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("check_pending", sa.Boolean(), nullable=False),
        sa.Column("journey", sa.Integer(), nullable=False),
        sa.Column("abandoned_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("converted_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("order_value", sa.Float(), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_cart_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"], name=op.f("fk_cart_store_id_store")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cart")),
        sa.UniqueConstraint("store_id", "external_id", name=op.f("uq_cart_store_id_external_id")),
    )
    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cart_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(
            "ix_cart_status_last_activity", ["status", "last_activity_at"], unique=False
        )

    op.create_table(
        "decision",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("cart_id", sa.Integer(), nullable=False),
        sa.Column("journey", sa.Integer(), nullable=False),
        sa.Column("touch", sa.Integer(), nullable=False),
        sa.Column("policy", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("arm_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("discount_pct", sa.Float(), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("decided_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("scheduled_for", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("state_reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("window_ends_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cart_id"], ["cart.id"], name=op.f("fk_decision_cart_id_cart")),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_decision_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision")),
        sa.UniqueConstraint(
            "cart_id", "journey", "touch", name=op.f("uq_decision_cart_id_journey_touch")
        ),
    )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decision_cart_id"), ["cart_id"], unique=False)
        batch_op.create_index(
            "ix_decision_state_scheduled_for", ["state", "scheduled_for"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_decision_window_ends_at"), ["window_ends_at"], unique=False
        )

    op.create_table(
        "message",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("decision_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decision.id"], name=op.f("fk_message_decision_id_decision")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"], name=op.f("fk_message_store_id_store")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_message_decision_id")),
    )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_status_lease_until", ["status", "lease_until"], unique=False
        )

    op.create_table(
        "outcome",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("converted", sa.Boolean(), nullable=False),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("discount_amount", sa.Float(), nullable=False),
        sa.Column("message_sent", sa.Boolean(), nullable=False),
        sa.Column("message_cost", sa.Float(), nullable=False),
        sa.Column("resolved_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decision.id"], name=op.f("fk_outcome_decision_id_decision")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"], name=op.f("fk_outcome_store_id_store")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_outcome_decision_id")),
    )
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outcome_store_id"), ["store_id"], unique=False)

    op.create_table(
        "click",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("clicked_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["message.id"], name=op.f("fk_click_message_id_message")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_click")),
    )
    with op.batch_alter_table("click", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_click_message_id"), ["message_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("click", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_click_message_id"))

    op.drop_table("click")
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcome_store_id"))

    op.drop_table("outcome")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_status_lease_until")

    op.drop_table("message")
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decision_window_ends_at"))
        batch_op.drop_index("ix_decision_state_scheduled_for")
        batch_op.drop_index(batch_op.f("ix_decision_cart_id"))

    op.drop_table("decision")
    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.drop_index("ix_cart_status_last_activity")
        batch_op.drop_index(batch_op.f("ix_cart_customer_id"))

    op.drop_table("cart")
    op.drop_table("event")
    op.drop_table("customer")
    with op.batch_alter_table("store", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_store_api_key_hash"))

    op.drop_table("store")
