"""The user directory on both databases: ids by lower-cased e-mail, forgotten only while still stale."""

from __future__ import annotations

from lmsbridge.storage import Repository


async def test_user_ids_are_found_by_lower_cased_email(repo: Repository) -> None:
    """A user saved under a mixed-case e-mail is found by its lower-cased form; the last listed id wins."""
    saved = await repo.directory.save_users("acc-1", [("Jane@Acme.example", "u-0"), ("jane@acme.example", "u-1")])
    assert saved == 1
    assert await repo.directory.user_id("acc-1", "jane@acme.example") == "u-1"
    assert await repo.directory.user_id("acc-2", "jane@acme.example") is None


async def test_forget_user_drops_the_entry_only_while_it_names_the_stale_id(repo: Repository) -> None:
    """Forgetting a stale id leaves an entry that already names another one, and drops one that names it."""
    await repo.directory.save_users("acc-1", [("jane@acme.example", "u-2")])
    await repo.directory.forget_user("acc-1", "Jane@acme.example", "u-1")
    assert await repo.directory.user_id("acc-1", "jane@acme.example") == "u-2"
    await repo.directory.forget_user("acc-1", "Jane@acme.example", "u-2")
    assert await repo.directory.user_id("acc-1", "jane@acme.example") is None
