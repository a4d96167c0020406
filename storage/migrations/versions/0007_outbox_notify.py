"""a new outbox row wakes the outbox workers of every instance (PostgreSQL LISTEN/NOTIFY); indexes of the undelivered rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

#: The channel the workers listen on (storage.notify.OUTBOX_CHANNEL).
CHANNEL = 'meldbot_outbox'


PENDING = sa.text('delivered_at IS NULL')


def upgrade() -> None:
    # Workers claim among the undelivered rows only; with a backlog the claim must not scan the
    # whole table per row (per-case order looks for an older undelivered message of the same case).
    op.drop_index('ix_outbox_due', table_name='outbox')
    op.create_index('ix_outbox_pending', 'outbox', ['next_attempt_at', 'id'], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    op.create_index('ix_outbox_pending_case', 'outbox', ['case_id', 'id'], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite runs one instance: its worker is woken in-process
    # A statement trigger: one notification per INSERT statement, sent when its transaction commits
    # (PostgreSQL folds identical notifications of one transaction into one).
    op.execute(f"""
        CREATE FUNCTION meldbot_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION meldbot_outbox_notify()""")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS meldbot_outbox_notify()")
    op.drop_index('ix_outbox_pending_case', table_name='outbox')
    op.drop_index('ix_outbox_pending', table_name='outbox')
    op.create_index('ix_outbox_due', 'outbox', ['delivered_at', 'next_attempt_at'])
