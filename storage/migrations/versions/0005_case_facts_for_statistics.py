"""statistics: a de-identified fact for every case (not only purged ones), in plain columns, its kinds
and the measures taken after it also as bits

Facts of purged cases are carried over (their codes and milestones become columns); facts of live
cases are written by `storage.repo.facts.sync_facts` when Meldbot starts (it needs the master key).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_FLAGS = ("injury", "damage", "absence", "recorded", "police_wanted", "police_filed", "aftercare_offered",
          "aftercare_accepted", "aggressor_response")


#: The kind bits as this revision defines them (storage.repo.facts.KIND_BITS only ever grows).
_KIND_BITS = ("verbal", "threat", "intimidation", "physical", "discrimination", "sexual", "vandalism", "online",
              "bribery", "other")


def kind_bits(kinds) -> int:
    return sum(1 << _KIND_BITS.index(k) for k in set(kinds) if k in _KIND_BITS)


def _json(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def upgrade() -> None:
    connection = op.get_bind()
    # Facts of purged cases are few: read into memory, then the table is made anew (renaming it
    # would leave its sequence and constraint names in the way on PostgreSQL).
    old = connection.execute(sa.text(
        "SELECT id, occurred_month, reported_month, kinds, place, urgent, anonymous, codes, milestones, outcome, "
        "ended_month, purged_at FROM case_facts ORDER BY id")).mappings().all()
    op.drop_index(op.f('ix_case_facts_occurred_month'), table_name='case_facts')
    op.drop_index(op.f('ix_case_facts_reported_month'), table_name='case_facts')
    op.drop_table('case_facts')
    op.create_table('case_facts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('occurred_month', sa.String(length=7), nullable=False),
    sa.Column('reported_month', sa.String(length=7), nullable=False),
    sa.Column('kinds', sa.JSON(), nullable=False),
    sa.Column('place', sa.String(length=32), nullable=True),
    sa.Column('department', sa.String(length=40), nullable=True),
    sa.Column('perpetrator', sa.String(length=16), nullable=True),
    *[sa.Column(name, sa.Boolean(), nullable=False) for name in ("injury", "damage", "absence", "urgent", "anonymous")],
    *[sa.Column(name, sa.Boolean(), nullable=False) for name in _FLAGS[3:]],
    sa.Column('kind_bits', sa.Integer(), nullable=False),
    sa.Column('measure_bits', sa.Integer(), nullable=False),
    sa.Column('open_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_contact_hours', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('milestones', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('ended_month', sa.String(length=7), nullable=True),
    sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_facts_case_id_cases'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_facts')),
    sa.UniqueConstraint('case_id', name=op.f('uq_case_facts_case_id'))
    )
    op.create_index(op.f('ix_case_facts_occurred_month'), 'case_facts', ['occurred_month'], unique=False)
    op.create_index(op.f('ix_case_facts_open_since'), 'case_facts', ['open_since'], unique=False)
    op.create_index('ix_case_facts_reported_month_id', 'case_facts', ['reported_month', 'id'], unique=False)
    facts = sa.table('case_facts', sa.column('kinds', sa.JSON()), sa.column('milestones', sa.JSON()),
                     *[sa.column(c) for c in (
                         'id', 'occurred_month', 'reported_month', 'place', 'department', 'perpetrator', 'urgent',
                         'kind_bits', 'measure_bits',
                         'anonymous', *_FLAGS, 'first_contact_hours', 'status', 'outcome', 'ended_month',
                         'purged_at')])
    for row in old:
        codes = _json(row["codes"]) or {}
        milestones = _json(row["milestones"]) or {}
        kinds = [k for k in (_json(row["kinds"]) or []) if isinstance(k, str)]
        consequences = codes.get("consequences") or []
        values = {
            "id": row["id"], "occurred_month": row["occurred_month"], "reported_month": row["reported_month"],
            "kinds": kinds, "kind_bits": kind_bits(kinds), "measure_bits": 0,
            "place": row["place"], "department": codes.get("department"),
            "perpetrator": codes.get("perpetrator_kind"), "urgent": bool(row["urgent"]),
            "anonymous": bool(row["anonymous"]),
            "injury": "injury" in consequences, "damage": "damage" in consequences,
            "absence": "absence" in consequences, "recorded": False,
            "police_wanted": False, "police_filed": "police_report_filed" in milestones,
            "aftercare_offered": "aftercare_offered" in milestones or "aftercare_accepted" in milestones,
            "aftercare_accepted": "aftercare_accepted" in milestones,
            "aggressor_response": "aggressor_response" in milestones,
            # Old milestones are elapsed hours, not working hours: unknown rather than wrong.
            "first_contact_hours": None,
            "status": "withdrawn" if row["outcome"] == "withdrawn" else "closed", "milestones": milestones,
            "outcome": row["outcome"], "ended_month": row["ended_month"], "purged_at": row["purged_at"],
        }
        connection.execute(facts.insert().values(**values))
    if connection.dialect.name == "postgresql" and old:
        connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('case_facts', 'id'), "
                                   "(SELECT MAX(id) FROM case_facts))"))


def downgrade() -> None:
    raise NotImplementedError("statistics facts cannot be folded back into purged-case facts")
