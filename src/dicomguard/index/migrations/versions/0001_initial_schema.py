"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 01:57:54.052422
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('archive_meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=1024), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_archive_meta'))
    )
    op.create_table('conflicts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('pixel_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('header_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conflicts'))
    )
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conflicts_sop_instance_uid'), ['sop_instance_uid'], unique=False)

    op.create_table('ingest_journal',
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('blob_id', name=op.f('pk_ingest_journal'))
    )
    op.create_table('patients',
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('kek_id', sa.String(length=32), nullable=True),
    sa.Column('wrapped_data_key', sa.LargeBinary(), nullable=True),
    sa.Column('identity_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('id_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('name_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('birth_date_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('phi', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('erase_reason', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('ref', name=op.f('pk_patients')),
    sa.UniqueConstraint('identity_token', name=op.f('uq_patients_identity_token'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_birth_date_token'), ['birth_date_token'], unique=False)
        batch_op.create_index(batch_op.f('ix_patients_id_token'), ['id_token'], unique=False)
        batch_op.create_index(batch_op.f('ix_patients_name_token'), ['name_token'], unique=False)

    op.create_table('users',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('totp_secret', sa.LargeBinary(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_users'))
    )
    op.create_table('wrapped_keys',
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('kek_id', sa.String(length=32), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('purpose', name=op.f('pk_wrapped_keys'))
    )
    op.create_table('patient_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patient_ref', sa.String(length=32), nullable=False),
    sa.Column('field', sa.SmallInteger(), nullable=False),
    sa.Column('token', sa.LargeBinary(length=16), nullable=False),
    sa.ForeignKeyConstraint(['patient_ref'], ['patients.ref'], name=op.f('fk_patient_tokens_patient_ref_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient_tokens'))
    )
    with op.batch_alter_table('patient_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_patient_tokens_field_token', ['field', 'token'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_tokens_patient_ref'), ['patient_ref'], unique=False)

    op.create_table('studies',
    sa.Column('uid', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=32), nullable=False),
    sa.Column('accession_token', sa.LargeBinary(length=16), nullable=True),
    sa.Column('study_year', sa.Integer(), nullable=True),
    sa.Column('phi', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_ref'], ['patients.ref'], name=op.f('fk_studies_patient_ref_patients')),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_studies'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_accession_token'), ['accession_token'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_patient_ref'), ['patient_ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_study_year'), ['study_year'], unique=False)

    op.create_table('series',
    sa.Column('uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('phi', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_uid'], ['studies.uid'], name=op.f('fk_series_study_uid_studies')),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_series'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_uid'), ['study_uid'], unique=False)

    op.create_table('instances',
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=32), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('transfer_syntax', sa.String(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('pixel_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('header_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('erased', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.uid'], name=op.f('fk_instances_series_uid_series')),
    sa.PrimaryKeyConstraint('sop_instance_uid', name=op.f('pk_instances')),
    sa.UniqueConstraint('blob_id', name=op.f('uq_instances_blob_id'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_patient_ref'), ['patient_ref'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_series_uid'), ['series_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_study_uid'), ['study_uid'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_study_uid'))
        batch_op.drop_index(batch_op.f('ix_instances_series_uid'))
        batch_op.drop_index(batch_op.f('ix_instances_patient_ref'))

    op.drop_table('instances')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_uid'))
        batch_op.drop_index(batch_op.f('ix_series_modality'))

    op.drop_table('series')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_study_year'))
        batch_op.drop_index(batch_op.f('ix_studies_patient_ref'))
        batch_op.drop_index(batch_op.f('ix_studies_accession_token'))

    op.drop_table('studies')
    with op.batch_alter_table('patient_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_tokens_patient_ref'))
        batch_op.drop_index('ix_patient_tokens_field_token')

    op.drop_table('patient_tokens')
    op.drop_table('wrapped_keys')
    op.drop_table('users')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_name_token'))
        batch_op.drop_index(batch_op.f('ix_patients_id_token'))
        batch_op.drop_index(batch_op.f('ix_patients_birth_date_token'))

    op.drop_table('patients')
    op.drop_table('ingest_journal')
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conflicts_sop_instance_uid'))

    op.drop_table('conflicts')
    op.drop_table('archive_meta')
