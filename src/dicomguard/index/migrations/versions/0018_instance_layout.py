"""instance layout: where the data set and its Pixel Data value lie, so a verified read need not walk the file again

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dataset_offset', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('pixel_start', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('pixel_end', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('pixel_end')
        batch_op.drop_column('pixel_start')
        batch_op.drop_column('dataset_offset')
