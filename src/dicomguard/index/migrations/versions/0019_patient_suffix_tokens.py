"""patient suffix indexes: leading-wildcard name and ID searches narrow by index (ADR 0017)

Rows written from this revision on carry suffix indexes. An archive with no live
patient yet is complete at once; one with patients becomes complete when
``dicomguard index backfill`` has indexed them (until then a leading-wildcard
search is narrowed as before, by its other keys).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

_KEY = 'patient_suffix_tokens'


def upgrade() -> None:
    conn = op.get_bind()
    live = conn.execute(sa.text("SELECT 1 FROM patients WHERE erased_at IS NULL LIMIT 1")).first()
    if live is None:
        conn.execute(sa.text("INSERT INTO archive_meta (key, value) VALUES (:k, 'complete')"), {"k": _KEY})


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM archive_meta WHERE key = :k"), {"k": _KEY})
