"""task leases: one node runs each archive-wide background task

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('task_lease',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_task_lease'))
    )


def downgrade() -> None:
    op.drop_table('task_lease')
