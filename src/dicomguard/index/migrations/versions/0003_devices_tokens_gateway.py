"""devices tokens gateway

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:19:11.744317
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('devices',
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('operations', sa.String(length=128), nullable=False),
    sa.Column('cert_serial', sa.String(length=64), nullable=False),
    sa.Column('cert_sha256', sa.String(length=64), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('move_host', sa.String(length=255), nullable=True),
    sa.Column('move_port', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('ae_title', name=op.f('pk_devices')),
    sa.UniqueConstraint('cert_sha256', name=op.f('uq_devices_cert_sha256'))
    )
    op.create_table('gateway_allow',
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ae_title', 'ip', name=op.f('pk_gateway_allow'))
    )
    op.create_table('api_tokens',
    sa.Column('token_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_name'], ['users.name'], name=op.f('fk_api_tokens_user_name_users')),
    sa.PrimaryKeyConstraint('token_sha256', name=op.f('pk_api_tokens'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_name'), ['user_name'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_name'))

    op.drop_table('api_tokens')
    op.drop_table('gateway_allow')
    op.drop_table('devices')
