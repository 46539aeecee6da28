"""study date blind index and archive-order index: date ranges and study listings read a page, not the archive

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('study_date_token', sa.LargeBinary(length=16), nullable=True))
        batch_op.create_index('ix_studies_study_date_token', ['study_date_token'], unique=False)
        batch_op.create_index('ix_studies_created_at_uid', ['created_at', 'uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_created_at_uid')
        batch_op.drop_index('ix_studies_study_date_token')
        batch_op.drop_column('study_date_token')
