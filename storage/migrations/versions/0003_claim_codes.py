"""single-use codes that bind the Teams coordinator channel; daily file quotas

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('claim_codes',
    sa.Column('code_digest', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('code_digest', name=op.f('pk_claim_codes'))
    )
    op.create_table('file_usage',
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('sender', sa.String(length=255), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('files', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('platform', 'sender', 'day', name=op.f('pk_file_usage'))
    )


def downgrade() -> None:
    op.drop_table('file_usage')
    op.drop_table('claim_codes')
