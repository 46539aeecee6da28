"""integrity ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:05:56.209657
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_checkpoints',
    sa.Column('size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('note', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('size', name=op.f('pk_ledger_checkpoints'))
    )
    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_head'))
    )
    op.bulk_insert(sa.table('ledger_head', sa.column('id', sa.Integer), sa.column('size', sa.BigInteger)), [{'id': 1, 'size': 0}])
    op.create_table('ledger_leaves',
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('idx', name=op.f('pk_ledger_leaves'))
    )
    with op.batch_alter_table('ledger_leaves', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_leaves_subject'), ['subject'], unique=False)

    op.create_table('ledger_nodes',
    sa.Column('level', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_ledger_nodes'))
    )
    op.create_table('ledger_trusted',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.LargeBinary(), nullable=False),
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_trusted'))
    )
    with op.batch_alter_table('ledger_trusted', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_trusted_size'), ['size'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blob_salt', sa.LargeBinary(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_instances_blob_salt'), ['blob_salt'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_blob_salt'))
        batch_op.drop_column('blob_salt')

    with op.batch_alter_table('ledger_trusted', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_trusted_size'))

    op.drop_table('ledger_trusted')
    op.drop_table('ledger_nodes')
    with op.batch_alter_table('ledger_leaves', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_leaves_subject'))

    op.drop_table('ledger_leaves')
    op.drop_table('ledger_head')
    op.drop_table('ledger_checkpoints')
