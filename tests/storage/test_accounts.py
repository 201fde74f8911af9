"""Account bookkeeping on both databases: an update changes only the fields it is given."""

from __future__ import annotations

from lmsbridge.storage import Repository
from tests.storage.conftest import T0


async def test_an_account_never_seen_reads_as_the_defaults(repo: Repository) -> None:
    """An account with no row is not paused, has no reason, no directory refresh, an unknown e-mail filter."""
    state = await repo.accounts.account("acc-1")
    assert (state.paused, state.reason, state.directory_refreshed_at, state.email_filter) == (
        False,
        None,
        None,
        "unknown",
    )


async def test_pausing_and_resuming_keep_the_fields_not_given(repo: Repository) -> None:
    """Pausing an account does not lose its e-mail filter or directory time; resuming with None clears the reason."""
    await repo.accounts.update_account("acc-1", email_filter="ignored", directory_refreshed_at=T0)
    await repo.accounts.update_account("acc-1", paused=True, reason="412 disabled", status=412)
    paused = await repo.accounts.account("acc-1")
    assert (paused.paused, paused.reason, paused.email_filter, paused.directory_refreshed_at) == (
        True,
        "412 disabled",
        "ignored",
        T0,
    )
    await repo.accounts.update_account("acc-1", paused=False, reason=None, status=None)
    resumed = await repo.accounts.account("acc-1")
    assert (resumed.paused, resumed.reason, resumed.email_filter, resumed.directory_refreshed_at) == (
        False,
        None,
        "ignored",
        T0,
    )
