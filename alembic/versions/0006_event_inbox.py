"""events are accepted first and applied by a worker: event.applied_at and the pending index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("applied_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("applied_at", store.types.UTCDateTime(), nullable=True))
    # Every event stored before this revision was applied when it was received.
    op.execute("UPDATE event SET applied_at = received_at")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_pending",
            ["id"],
            unique=False,
            sqlite_where=_PENDING,
            postgresql_where=_PENDING,
        )


def downgrade() -> None:
    # Apply what is pending first (``nudge worker``): the old schema has no backlog.
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_pending")
        batch_op.drop_column("applied_at")
