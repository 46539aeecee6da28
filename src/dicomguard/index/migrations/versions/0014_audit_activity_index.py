"""audit activity index: hourly counts read the index only

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 10:40:00
"""

from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_records_event_time_event_id_outcome', 'audit_records', ['event_time', 'event_id', 'outcome'])


def downgrade() -> None:
    op.drop_index('ix_audit_records_event_time_event_id_outcome', table_name='audit_records')
