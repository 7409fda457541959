"""Run provenance (graph version, router checkpoint), gold aliases on feedback, a rewards table.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("graph_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("router_checkpoint", sa.Text(), nullable=True))

    op.create_table(
        "rewards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("format", sa.Double(), nullable=False),
        sa.Column("outcome", sa.Double(), nullable=False),
        sa.Column("cost", sa.Double(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.Column("reward_config", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_rewards_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    op.create_index(op.f("ix_rewards_run_id"), "rewards", ["run_id"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("gold_aliases", sa.JSON(), nullable=True))
    op.create_index(op.f("ix_feedback_source"), "feedback", ["source"])


def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_source"), table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("gold_aliases")
    op.drop_index(op.f("ix_rewards_run_id"), table_name="rewards")
    op.drop_table("rewards")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("router_checkpoint")
        batch.drop_column("graph_version")
