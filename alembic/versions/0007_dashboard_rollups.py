"""dashboard rollups: daily sums per store (carts, journeys, decisions, messages) and
experiment cells, which the dashboard reads instead of summing every row on each view

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollup_cart_day",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_rollup_cart_day_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_cart_day")),
    )
    with op.batch_alter_table("rollup_cart_day", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_cart_day_store_day", ["store_id", "day"], unique=False)

    op.create_table(
        "rollup_decision_day",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("arm_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("conversions", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("revenue_sq", sa.Float(), nullable=False),
        sa.Column("discount", sa.Float(), nullable=False),
        sa.Column("message_cost", sa.Float(), nullable=False),
        sa.Column("rev_cost", sa.Float(), nullable=False),
        sa.Column("cost_sq", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_rollup_decision_day_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_decision_day")),
    )
    with op.batch_alter_table("rollup_decision_day", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_decision_day_store_day", ["store_id", "day"], unique=False)

    op.create_table(
        "rollup_journey_day",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("arm", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("device", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("customer_type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("value_band", sa.Integer(), nullable=False),
        sa.Column("checkout_stage", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("journeys", sa.Integer(), nullable=False),
        sa.Column("messaged", sa.Integer(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.Column("converted", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("revenue_sq", sa.Float(), nullable=False),
        sa.Column("recovered_revenue", sa.Float(), nullable=False),
        sa.Column("discount", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("rev_cost", sa.Float(), nullable=False),
        sa.Column("cost_sq", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_rollup_journey_day_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_journey_day")),
    )
    with op.batch_alter_table("rollup_journey_day", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_journey_day_store_day", ["store_id", "day"], unique=False)

    op.create_table(
        "rollup_message_day",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("error_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.Column("example", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("last_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_rollup_message_day_store_id_store")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_message_day")),
    )
    with op.batch_alter_table("rollup_message_day", schema=None) as batch_op:
        batch_op.create_index("ix_rollup_message_day_store_day", ["store_id", "day"], unique=False)

    op.create_table(
        "rollup_state",
        sa.Column("store_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("refreshed_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("full_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("since", sa.Date(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["store.id"], name=op.f("fk_rollup_state_store_id_store")
        ),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_rollup_state")),
    )
    op.create_table(
        "rollup_experiment_cell",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("arm", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("segment", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("carts", sa.Integer(), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("conversions", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("revenue_sq", sa.Float(), nullable=False),
        sa.Column("discount_cost", sa.Float(), nullable=False),
        sa.Column("message_cost", sa.Float(), nullable=False),
        sa.Column("profit", sa.Float(), nullable=False),
        sa.Column("profit_sq", sa.Float(), nullable=False),
        sa.Column("attributed_orders", sa.Integer(), nullable=False),
        sa.Column("attributed_revenue", sa.Float(), nullable=False),
        sa.Column("w", sa.Float(), nullable=False),
        sa.Column("wr", sa.Float(), nullable=False),
        sa.Column("w2", sa.Float(), nullable=False),
        sa.Column("w2r", sa.Float(), nullable=False),
        sa.Column("w2r2", sa.Float(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
            name=op.f("fk_rollup_experiment_cell_experiment_id_experiment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_experiment_cell")),
    )
    with op.batch_alter_table("rollup_experiment_cell", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rollup_experiment_cell_experiment_day",
            ["experiment_id", "unit", "day"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("rollup_experiment_cell", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_experiment_cell_experiment_day")

    op.drop_table("rollup_experiment_cell")
    op.drop_table("rollup_state")
    with op.batch_alter_table("rollup_message_day", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_message_day_store_day")

    op.drop_table("rollup_message_day")
    with op.batch_alter_table("rollup_journey_day", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_journey_day_store_day")

    op.drop_table("rollup_journey_day")
    with op.batch_alter_table("rollup_decision_day", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_decision_day_store_day")

    op.drop_table("rollup_decision_day")
    with op.batch_alter_table("rollup_cart_day", schema=None) as batch_op:
        batch_op.drop_index("ix_rollup_cart_day_store_day")

    op.drop_table("rollup_cart_day")
