"""policy attributes, break-glass grants, step-up window

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 04:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('study_access_window',
    sa.Column('principal', sa.String(length=160), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'study_uid', name=op.f('pk_study_access_window'))
    )
    with op.batch_alter_table('study_access_window', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_access_window_last_at'), ['last_at'], unique=False)

    op.create_table('break_glass_grants',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_name'], ['users.name'], name=op.f('fk_break_glass_grants_user_name_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_break_glass_grants'))
    )
    with op.batch_alter_table('break_glass_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_break_glass_grants_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_grants_patient_ref'), ['patient_ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_grants_user_name'), ['user_name'], unique=False)

    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mfa_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('department', sa.String(length=64), nullable=True))

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('department', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('site', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('labels', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('referring_token', sa.LargeBinary(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_studies_department'), ['department'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_referring_token'), ['referring_token'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attributes', sa.String(length=2048), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('attributes')

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_referring_token'))
        batch_op.drop_index(batch_op.f('ix_studies_department'))
        batch_op.drop_column('referring_token')
        batch_op.drop_column('labels')
        batch_op.drop_column('site')
        batch_op.drop_column('department')

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('department')

    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.drop_column('mfa_at')

    with op.batch_alter_table('break_glass_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_break_glass_grants_user_name'))
        batch_op.drop_index(batch_op.f('ix_break_glass_grants_patient_ref'))
        batch_op.drop_index(batch_op.f('ix_break_glass_grants_expires_at'))

    op.drop_table('break_glass_grants')
    with op.batch_alter_table('study_access_window', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_access_window_last_at'))

    op.drop_table('study_access_window')
