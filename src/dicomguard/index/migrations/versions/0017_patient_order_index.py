"""archive-order index on patients: patient-level searches read a page, not the archive

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 22:00:00
"""

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index('ix_patients_created_at_ref', ['created_at', 'ref'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index('ix_patients_created_at_ref')
