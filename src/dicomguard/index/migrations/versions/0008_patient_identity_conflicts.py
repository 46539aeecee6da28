"""patient identity conflicts: rows kept apart by demographics

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 02:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('demographics_token', sa.LargeBinary(length=16), nullable=True))
        batch_op.drop_constraint('uq_patients_identity_token', type_='unique')
        batch_op.create_index(batch_op.f('ix_patients_identity_token'), ['identity_token'], unique=False)
        batch_op.create_unique_constraint('uq_patients_identity_token_demographics_token',
                                          ['identity_token', 'demographics_token'])

    op.create_table('patient_conflicts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_ref', sa.String(length=32), nullable=False),
    sa.Column('other_ref', sa.String(length=32), nullable=False),
    sa.Column('fields', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution', sa.String(length=32), nullable=True),
    sa.Column('resolved_by', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['other_ref'], ['patients.ref'], name=op.f('fk_patient_conflicts_other_ref_patients')),
    sa.ForeignKeyConstraint(['patient_ref'], ['patients.ref'], name=op.f('fk_patient_conflicts_patient_ref_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient_conflicts'))
    )
    with op.batch_alter_table('patient_conflicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_conflicts_other_ref'), ['other_ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_conflicts_patient_ref'), ['patient_ref'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('patient_conflicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_conflicts_patient_ref'))
        batch_op.drop_index(batch_op.f('ix_patient_conflicts_other_ref'))
    op.drop_table('patient_conflicts')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_constraint('uq_patients_identity_token_demographics_token', type_='unique')
        batch_op.drop_index(batch_op.f('ix_patients_identity_token'))
        batch_op.create_unique_constraint('uq_patients_identity_token', ['identity_token'])
        batch_op.drop_column('demographics_token')
