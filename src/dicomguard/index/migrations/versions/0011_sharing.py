"""share links, share sessions and uses, peers, transfer jobs, object provenance

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('object_provenance',
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=256), nullable=False),
    sa.Column('leaf_index', sa.BigInteger(), nullable=False),
    sa.Column('tree_size', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('bundle', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('sop_instance_uid', name=op.f('pk_object_provenance'))
    )
    with op.batch_alter_table('object_provenance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_object_provenance_peer'), ['peer'], unique=False)

    op.create_table('peers',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=512), nullable=False),
    sa.Column('ca_pem', sa.Text(), nullable=False),
    sa.Column('ledger_key', sa.String(length=256), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.Column('cert_pem', sa.Text(), nullable=True),
    sa.Column('key_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('external', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_peers')),
    sa.UniqueConstraint('device', name=op.f('uq_peers_device'))
    )
    op.create_table('share_links',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('token_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('pin_mac', sa.LargeBinary(length=32), nullable=False),
    sa.Column('owner', sa.String(length=256), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('source_study_uid', sa.String(length=64), nullable=False),
    sa.Column('recipient_kind', sa.String(length=16), nullable=False),
    sa.Column('download', sa.Boolean(), nullable=False),
    sa.Column('deidentified', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('failed_pins', sa.Integer(), nullable=False),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=256), nullable=True),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_share_links')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_share_links_token_sha256'))
    )
    with op.batch_alter_table('share_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_share_links_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_share_links_source_study_uid'), ['source_study_uid'], unique=False)

    op.create_table('transfer_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('objects', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=512), nullable=True),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfer_jobs'))
    )
    with op.batch_alter_table('transfer_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transfer_jobs_peer'), ['peer'], unique=False)
        batch_op.create_index(batch_op.f('ix_transfer_jobs_state'), ['state'], unique=False)

    op.create_table('share_sessions',
    sa.Column('id_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('share_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['share_id'], ['share_links.id'], name=op.f('fk_share_sessions_share_id_share_links'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_sha256', name=op.f('pk_share_sessions'))
    )
    with op.batch_alter_table('share_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_share_sessions_share_id'), ['share_id'], unique=False)

    op.create_table('share_uses',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('share_id', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['share_id'], ['share_links.id'], name=op.f('fk_share_uses_share_id_share_links'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_share_uses'))
    )
    with op.batch_alter_table('share_uses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_share_uses_share_id'), ['share_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('share_uses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_share_uses_share_id'))

    op.drop_table('share_uses')
    with op.batch_alter_table('share_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_share_sessions_share_id'))

    op.drop_table('share_sessions')
    with op.batch_alter_table('transfer_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transfer_jobs_state'))
        batch_op.drop_index(batch_op.f('ix_transfer_jobs_peer'))

    op.drop_table('transfer_jobs')
    with op.batch_alter_table('share_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_share_links_source_study_uid'))
        batch_op.drop_index(batch_op.f('ix_share_links_owner'))

    op.drop_table('share_links')
    op.drop_table('peers')
    with op.batch_alter_table('object_provenance', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_object_provenance_peer'))

    op.drop_table('object_provenance')
