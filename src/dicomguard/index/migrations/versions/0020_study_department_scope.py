"""studies by department in storage order; departments stored in the form policies compare (ADR 0019)

A search reads only the studies the principal's policies can permit, and for a
department that is one range scan of ``ix_studies_department_created_at_uid``
in the order pages are read. The condition compares the stored department with
the one Cedar sees (``policy.engine`` upper-cases, single-spaces and cuts it at
64 characters), so every stored department is rewritten once into that form:
only values that are not yet in it change (lower case, runs of spaces, or a
space left at the end by the 64-character cut, which Cedar's form drops too).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def _canonical(value: str) -> str:
    # the fixed point of policy.engine's department form (core.attributes.department_from_header)
    return " ".join(value.split()).upper()[:64].rstrip(" ")


def upgrade() -> None:
    conn = op.get_bind()
    stored = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT department FROM studies WHERE department IS NOT NULL"))]
    for value in stored:
        if _canonical(value) != value:
            conn.execute(sa.text("UPDATE studies SET department = :new WHERE department = :old"),
                         {"new": _canonical(value) or None, "old": value})
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index('ix_studies_department_created_at_uid', ['department', 'created_at', 'uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_department_created_at_uid')
