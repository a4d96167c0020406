"""encryption at rest: keyring, sealed columns, keyed lookups, anonymous contact, retention columns, case facts

Earlier rows are sealed in place with the master key `storage.db.upgrade` passes in (the keyring is
created here); their plain-text columns are dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import datetime as dt

import sqlalchemy as sa
from alembic import context, op

from storage import crypto, keys

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_PLAIN_TABLES = ("conversations", "reporters", "cases", "case_events", "attachments", "outbox", "file_usage")


def _vault(connection):
    master = context.config.attributes.get("master_key")
    has_rows = any(connection.execute(sa.text(f"SELECT 1 FROM {name} LIMIT 1")).first() for name in _PLAIN_TABLES)
    if master is None:
        if has_rows:
            raise RuntimeError("this upgrade encrypts the stored reports and needs the master key: run it "
                               "through `meldbot db upgrade --config FILE` (or `meldbot run`)")
        return None
    keys.ensure_keyring(connection, master, dt.datetime.now(dt.timezone.utc))
    table = sa.table("keyring", sa.column("name"), sa.column("wrapped"), sa.column("key_master"))
    rows = [tuple(row) for row in connection.execute(sa.select(table.c.name, table.c.wrapped, table.c.key_master))]
    return keys.vault_from_rows(master, rows)


def upgrade() -> None:
    op.create_table('keyring',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('key_master', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_keyring'))
    )
    op.create_table('case_facts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_month', sa.String(length=7), nullable=False),
    sa.Column('reported_month', sa.String(length=7), nullable=False),
    sa.Column('kinds', sa.JSON(), nullable=False),
    sa.Column('place', sa.String(length=32), nullable=True),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('codes', sa.JSON(), nullable=False),
    sa.Column('milestones', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('ended_month', sa.String(length=7), nullable=True),
    sa.Column('purged_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_facts'))
    )
    op.create_index(op.f('ix_case_facts_occurred_month'), 'case_facts', ['occurred_month'], unique=False)
    op.create_index(op.f('ix_case_facts_reported_month'), 'case_facts', ['reported_month'], unique=False)

    with op.batch_alter_table('conversations') as batch:
        batch.add_column(sa.Column('key_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('sender_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('reporters') as batch:
        batch.add_column(sa.Column('identity_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('cases') as batch:
        batch.add_column(sa.Column('wrapped_key', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('key_master', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('platform', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('contact', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('reporter_tag', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('legal_hold_since', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('purge_notice_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('case_events') as batch:
        batch.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('attachments') as batch:
        batch.add_column(sa.Column('wrapped_key', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('key_master', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('sealed_name', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('sealed', sa.LargeBinary(), nullable=True))

    connection = op.get_bind()
    vault = _vault(connection)
    if vault is not None:
        _seal_rows(connection, vault)

    with op.batch_alter_table('conversations') as batch:
        batch.drop_constraint('uq_conversations_key', type_='unique')
        batch.drop_column('conversation_key')
        batch.drop_column('sender')
        batch.drop_column('state')
        batch.drop_column('address')
        batch.alter_column('key_hash', existing_type=sa.String(length=64), nullable=False)
        batch.alter_column('sender_hash', existing_type=sa.String(length=64), nullable=False)
        batch.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=False)
        batch.create_unique_constraint('uq_conversations_key', ['platform', 'key_hash', 'sender_hash'])
        batch.create_index(batch.f('ix_conversations_sender_hash'), ['sender_hash'], unique=False)
    with op.batch_alter_table('reporters') as batch:
        batch.drop_constraint('uq_reporters_identity', type_='unique')
        batch.drop_column('platform_user_id')
        batch.drop_column('display_name')
        batch.alter_column('identity_hash', existing_type=sa.String(length=64), nullable=False)
        batch.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=False)
        batch.create_unique_constraint('uq_reporters_identity', ['platform', 'identity_hash'])
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('story')
        batch.drop_column('answers')
        batch.drop_column('closing_summary')
        batch.alter_column('reporter_id', existing_type=sa.Integer(), nullable=True)
        batch.alter_column('wrapped_key', existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column('key_master', existing_type=sa.String(length=16), nullable=False)
        batch.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=False)
        batch.create_index(batch.f('ix_cases_key_master'), ['key_master'], unique=False)
        batch.create_index(batch.f('ix_cases_reporter_tag'), ['reporter_tag'], unique=False)
    with op.batch_alter_table('case_events') as batch:
        batch.drop_column('data')
        batch.alter_column('sealed', existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table('attachments') as batch:
        batch.drop_column('filename')
        batch.alter_column('wrapped_key', existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column('key_master', existing_type=sa.String(length=16), nullable=False)
        batch.alter_column('sealed_name', existing_type=sa.LargeBinary(), nullable=False)
        batch.create_index(batch.f('ix_attachments_key_master'), ['key_master'], unique=False)
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('payload')


def _seal_rows(connection, vault) -> None:
    """Seal every plain-text row written before this version (one pass per table)."""
    def table(name, *columns):
        return sa.table(name, *[sa.column(c, t) if t is not None else sa.column(c) for c, t in columns])

    conversations = table("conversations", ("id", None), ("platform", None), ("conversation_key", None),
                          ("sender", None), ("state", sa.JSON()), ("address", sa.JSON()), ("key_hash", None),
                          ("sender_hash", None), ("sealed", sa.LargeBinary()))
    for row in connection.execute(sa.select(conversations)).mappings().all():
        sealed = vault.seal_json("state", {"conversation_key": row["conversation_key"], "sender": row["sender"],
                                           "state": row["state"] or {}, "address": row["address"] or {}},
                                 "conversation")
        connection.execute(conversations.update().where(conversations.c.id == row["id"]).values(
            key_hash=vault.lookup("conversation", row["platform"], row["conversation_key"]),
            sender_hash=vault.lookup("sender", row["platform"], row["sender"]), sealed=sealed))

    reporters = table("reporters", ("id", None), ("platform", None), ("platform_user_id", None),
                      ("display_name", None), ("identity_hash", None), ("sealed", sa.LargeBinary()))
    identities = {}
    for row in connection.execute(sa.select(reporters)).mappings().all():
        identities[row["id"]] = (row["platform"], row["platform_user_id"])
        connection.execute(reporters.update().where(reporters.c.id == row["id"]).values(
            identity_hash=vault.lookup("sender", row["platform"], row["platform_user_id"]),
            sealed=vault.seal_json("people", {"platform_user_id": row["platform_user_id"],
                                              "display_name": row["display_name"]}, "reporter")))

    platforms = dict(connection.execute(sa.text("SELECT id, platform FROM conversations")).all())
    cases = table("cases", ("id", None), ("platform", None), ("story", None), ("answers", sa.JSON()), ("closing_summary", None),
                  ("anonymous", None), ("reporter_id", None), ("conversation_id", None), ("wrapped_key", None),
                  ("key_master", None), ("sealed", None), ("contact", None), ("reporter_tag", None))
    events = table("case_events", ("id", None), ("case_id", None), ("data", sa.JSON()), ("sealed", None))
    ciphers = {}
    for row in connection.execute(sa.select(cases)).mappings().all():
        cipher, wrapped = vault.new_data_key("case")
        ciphers[row["id"]] = cipher
        values = {"wrapped_key": wrapped, "key_master": vault.master_id,
                  "sealed": crypto.seal_with(cipher, {"story": row["story"], "answers": row["answers"] or {},
                                                      "closing_summary": row["closing_summary"]}, "case"),
                  "platform": platforms.get(row["conversation_id"])}
        if row["anonymous"]:
            values["contact"] = vault.seal_json("anonymous", {"conversation_id": row["conversation_id"]}, "contact")
            identity = identities.get(row["reporter_id"])
            values["reporter_tag"] = vault.anonymous_tag(*identity) if identity else None
            values["reporter_id"] = None
            values["conversation_id"] = None
        connection.execute(cases.update().where(cases.c.id == row["id"]).values(**values))
    for row in connection.execute(sa.select(events)).mappings().all():
        connection.execute(events.update().where(events.c.id == row["id"]).values(
            sealed=crypto.seal_with(ciphers[row["case_id"]], row["data"] or {}, "event")))

    attachments = table("attachments", ("id", None), ("filename", None), ("content", sa.LargeBinary()),
                        ("wrapped_key", None), ("key_master", None), ("sealed_name", None))
    for (attachment_id,) in connection.execute(sa.select(attachments.c.id)).all():
        row = connection.execute(sa.select(attachments).where(attachments.c.id == attachment_id)).mappings().one()
        cipher, wrapped = vault.new_data_key("file")
        connection.execute(attachments.update().where(attachments.c.id == attachment_id).values(
            wrapped_key=wrapped, key_master=vault.master_id,
            sealed_name=crypto.seal_with(cipher, row["filename"], "file name"),
            content=crypto.seal_file(cipher, row["content"]) if row["content"] is not None else None))

    outbox = table("outbox", ("id", None), ("payload", sa.JSON()), ("delivered_at", None), ("sealed", None))
    for row in connection.execute(sa.select(outbox)).mappings().all():
        payload = {} if row["delivered_at"] is not None else (row["payload"] or {})
        connection.execute(outbox.update().where(outbox.c.id == row["id"]).values(
            sealed=vault.seal_json("state", {"payload": payload}, "outbox")))

    usage = table("file_usage", ("platform", None), ("sender", None), ("day", None))
    for row in connection.execute(sa.select(usage)).mappings().all():
        connection.execute(usage.update().where(usage.c.platform == row["platform"], usage.c.sender == row["sender"],
                                                usage.c.day == row["day"])
                           .values(sender=vault.lookup("sender", row["platform"], row["sender"])))


def downgrade() -> None:
    raise NotImplementedError("encrypted data cannot be turned back into plain text by a migration")
