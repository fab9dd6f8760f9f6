"""reporting indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cart_store_abandoned_at", ["store_id", "abandoned_at"], unique=False
        )

    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.create_index(
            "ix_decision_store_decided_at", ["store_id", "decided_at"], unique=False
        )

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_store_created_at", ["store_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_store_created_at")

    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_index("ix_decision_store_decided_at")

    with op.batch_alter_table("cart", schema=None) as batch_op:
        batch_op.drop_index("ix_cart_store_abandoned_at")
