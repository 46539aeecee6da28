"""audit trail: sealed DICOM audit records, their patient blind indexes, syslog forwarding cursors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:49:17.149459
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_cursors',
    sa.Column('collector', sa.String(length=255), nullable=False),
    sa.Column('forwarded_up_to', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.String(length=256), nullable=True),
    sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('collector', name=op.f('pk_audit_cursors'))
    )
    op.create_table('audit_records',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=128), nullable=True),
    sa.Column('action', sa.String(length=1), nullable=True),
    sa.Column('outcome', sa.SmallInteger(), nullable=False),
    sa.Column('origin', sa.String(length=128), nullable=False),
    sa.Column('user_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('dedup_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_records')),
    sa.UniqueConstraint('dedup_token', name=op.f('uq_audit_records_dedup_token'))
    )
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_records_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_event_time'), ['event_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_user_token'), ['user_token'], unique=False)

    op.create_table('audit_patients',
    sa.Column('record_seq', sa.BigInteger(), nullable=False),
    sa.Column('token', sa.LargeBinary(length=16), nullable=False),
    sa.ForeignKeyConstraint(['record_seq'], ['audit_records.seq'], name=op.f('fk_audit_patients_record_seq_audit_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('record_seq', 'token', name=op.f('pk_audit_patients'))
    )
    with op.batch_alter_table('audit_patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_patients_token'), ['token'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('audit_patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_patients_token'))

    op.drop_table('audit_patients')
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_records_user_token'))
        batch_op.drop_index(batch_op.f('ix_audit_records_event_time'))
        batch_op.drop_index(batch_op.f('ix_audit_records_event_id'))

    op.drop_table('audit_records')
    op.drop_table('audit_cursors')
