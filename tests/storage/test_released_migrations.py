"""A migration, once released, never changes: databases stamped with its revision never run it again."""

from __future__ import annotations

import hashlib

from lmsbridge.storage.migrate import MIGRATIONS

RELEASED = {
    "0001_initial_schema.py": "a4656d352d0534d68e5287b281f8f7d29ae9020aee19453cd89d97e70e61a7a4",
    "0002_retakes_titles_source_ids.py": "b61765f8becd67270d44b5ec8b11c26b39a15d2feae330caa2501d4d96fbf708",
    "0003_reconcile.py": "f245374851eafce2d57884ccdf1e6e84d013e4adf27367132e362d5dc8684352",
    "0004_scale_out.py": "d74fea5ff9ec72f48d3b5a361f4d49e74e5c2c3f33148137af468ea003d9a686",
    # Changed once after its release, the one exception: on PostgreSQL it failed the whole upgrade
    # on a key whose email_key outgrows the 320-character column (a key 0004 accepted: NFKC spells
    # some characters out in 18), and no worker of the new version could start; there such a key
    # now keeps its old one (SQLite, which stores any length, is unchanged). A PostgreSQL database
    # at 0005 ran the old text without such a key (else 0005 failed and rolled back), and on those
    # the two texts do exactly the same: no database already migrated differs for the change.
    "0005_email_keys.py": "412d88c050f8e8c2d7e31e2ba6b2b2d11aa8b76e05592b150b8b3d48c4eb05ab",
    "0006_first_written_at.py": "c78823d46fe06d02bac0ca9d0e567f6f8d149f23ed2e55c31a46df72df511277",
    "0007_completion_cycles.py": "50feca64bf68e6b2158f0b24fc51e03e487d9728c504530e3214a7893bc49995",
}


def test_released_migrations_are_never_edited() -> None:
    """Each released migration file is byte for byte what was released (its sha256 pinned here).

    Alembic runs a revision once and stamps the database with its id; it never looks at the file
    again. A released revision edited afterwards therefore reaches only new databases: 0004 was
    changed after it was committed (83ba016 added ``ledger_counts`` to it), and every database
    already stamped 0004 went on without that table, with no upgrade that would ever create it.
    A schema change is a new revision (0006, ...), never an edit of a released one; once a new
    revision is released, add its hash here. A failure here means: undo the edit, and put the
    change in a new revision instead.
    """
    versions = MIGRATIONS / "versions"
    found = {name: hashlib.sha256((versions / name).read_bytes()).hexdigest() for name in RELEASED}
    assert found == RELEASED
