"""e-mail keys: records and the directory re-keyed by ``email_key``

A person was keyed by the e-mail lower-cased; the key now also folds Unicode's form, invisible
characters and an IDNA-encoded or full-width domain (:func:`lmsbridge.domain.events.email_key`).
Only keys holding something other than printable ASCII, or an ``xn--`` label, can change, so only
those are read. A record whose new key another record of its source and learning object already
has keeps its old key (the two were one person split before this revision; new events go to the
one with the new key): they are counted in a ``migrate.records_kept_apart`` warning. A directory
entry whose new key is taken is dropped (the directory is a cache; a refresh lists it again).
A key whose new key is longer than its column (320 characters; NFKC spells some characters out
in up to 18) keeps its old key where the database enforces the length (PostgreSQL): counted in a
``migrate.keys_too_long`` warning, instead of the whole upgrade failing for one row.
The downgrade leaves the keys as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from lmsbridge.domain.events import email_key
from lmsbridge.logs import get_logger

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = get_logger(__name__)
KEY_LENGTH = 320  # records.person_key and directory.email


def _may_change(column: sa.ColumnClause[str]) -> sa.ColumnElement[bool]:
    """Keys holding a character outside printable ASCII, or an IDNA label (all, on other databases)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        odd = column.op("~")("[^ -~]")
    elif dialect == "sqlite":
        odd = column.op("GLOB")("*[^ -~]*")
    else:
        return sa.true()
    return sa.or_(odd, column.like("%xn--%"))


def _fits(key: str) -> bool:
    """Whether the database can store ``key`` in a 320-character column (SQLite does not enforce
    lengths; PostgreSQL refused a longer one, and the whole upgrade with it)."""
    return op.get_bind().dialect.name == "sqlite" or len(key) <= KEY_LENGTH


def upgrade() -> None:
    bind = op.get_bind()
    records = sa.table(
        "records", sa.column("id"), sa.column("source"), sa.column("learning_object_ref"), sa.column("person_key")
    )
    found = bind.execute(
        sa.select(records.c.id, records.c.source, records.c.learning_object_ref, records.c.person_key)
        .where(_may_change(records.c.person_key))
        .order_by(records.c.id)
    ).all()
    kept = []
    too_long = []
    for record_id, source, ref, old in found:
        key = email_key(old)
        if key == old:
            continue
        if not _fits(key):
            too_long.append(record_id)
            continue
        taken = bind.execute(
            sa.select(records.c.id).where(
                records.c.source == source, records.c.learning_object_ref == ref, records.c.person_key == key
            )
        ).first()
        if taken is not None:
            kept.append(record_id)
            continue
        bind.execute(records.update().where(records.c.id == record_id).values(person_key=key))
    if kept:
        log.warning("migrate.records_kept_apart", count=len(kept), record_ids=kept[:20])
    if too_long:
        log.warning("migrate.keys_too_long", table="records", count=len(too_long), record_ids=too_long[:20])

    directory = sa.table("directory", sa.column("account"), sa.column("email"))
    entries = bind.execute(
        sa.select(directory.c.account, directory.c.email).where(_may_change(directory.c.email))
    ).all()
    long_entries = 0
    for account, old in entries:
        key = email_key(old)
        if key == old:
            continue
        if not _fits(key):
            long_entries += 1
            continue
        mine = sa.and_(directory.c.account == account, directory.c.email == old)
        holder = sa.select(directory.c.email).where(directory.c.account == account, directory.c.email == key)
        if bind.execute(holder).first() is not None:
            bind.execute(directory.delete().where(mine))
        else:
            bind.execute(directory.update().where(mine).values(email=key))
    if long_entries:
        log.warning("migrate.keys_too_long", table="directory", count=long_entries)


def downgrade() -> None:
    pass
