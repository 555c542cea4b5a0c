"""Outlook tokens over IMAP: expiry mid-sync, revocation, and a valid token whose login is refused."""

from __future__ import annotations

import pytest

from accounts.models import MailAccount
from accounts.services import ReauthorizationRequired
from mailbox.models import Message, SyncState
from mailbox.sync import account_sync
from providers.errors import NoMailbox
from providers.microsoft.exchange import imap_check_login
from tests.fixtures.dovecot import outlook_client
from tests.providers.test_outlook_sync import db_view, seed, server_view

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def test_token_expired_mid_sync_is_refreshed_and_the_rotated_refresh_token_saved(
    dovecot, outlook_account, sandbox, settings
):
    account = outlook_account()
    seed(dovecot, account.email, 40)
    old_access, old_refresh = account.access_token, account.refresh_token
    settings.MICROSOFT_IMAP_PORT = dovecot.proxy.port
    client = outlook_client(account, chunk_size=10)
    with client.session:
        pass  # logged in once with the current token
    # Microsoft expires the token early (we still think it valid), and the connection drops mid-fetch.
    sandbox.microsoft.expire_access_tokens(account.email)
    dovecot.proxy.cut_after(30_000)
    client.full_sync()

    assert dovecot.proxy.cuts == 1  # the sync really had to log in again mid-way
    account.refresh_from_db()
    assert account.access_token != old_access and account.refresh_token != old_refresh
    assert account.status == MailAccount.Status.ACTIVE
    assert db_view(account) == server_view(dovecot, account.email)


def test_revoked_grant_stops_the_sync_in_the_reconnect_state(dovecot, outlook_account, sandbox):
    account = outlook_account()
    seed(dovecot, account.email, 3)
    sandbox.microsoft.revoke_user(account.email)  # the user removed Mailhub's access

    with pytest.raises(ReauthorizationRequired):
        outlook_client(account).full_sync()
    account.refresh_from_db()
    assert account.status == MailAccount.Status.REAUTH_REQUIRED
    assert "Reconnect" in account.status_message

    # Through the sync service: stopped, no retry loop, a plain reason.
    assert account_sync(account_id=account.pk).outcome == "stopped"
    state = SyncState.objects.get(account=account)
    assert state.status == SyncState.Status.STOPPED and state.last_error_code == "access_revoked"
    assert "Reconnect" in state.error_message and "token" not in state.last_error.lower()
    assert not Message.objects.filter(account=account).exists()


def test_valid_token_refused_at_login_means_no_mailbox(dovecot, outlook_account, sandbox):
    account = outlook_account(has_mailbox=False)

    with pytest.raises(NoMailbox) as caught:
        outlook_client(account).full_sync()
    assert "no Outlook mailbox" in str(caught.value) and account.access_token not in str(caught.value)
    account.refresh_from_db()
    assert account.status == MailAccount.Status.ACTIVE  # a provider only raises; the engine decides

    # Through the sync engine: stopped at once (as for Gmail), the account waits for its user.
    assert account_sync(account_id=account.pk).outcome == "stopped"
    account.refresh_from_db()
    assert account.status == MailAccount.Status.NO_MAILBOX and account.needs_reconnect
    assert "no mailbox" in account.status_message and "Microsoft" in account.status_message
    assert SyncState.objects.get(account=account).last_error_code == "no_mailbox"
    assert account_sync(account_id=account.pk).outcome == "stopped"

    # The connect-time check says the same for a mailbox-less token, and nothing for a good one.
    with pytest.raises(NoMailbox):
        imap_check_login(email=account.email, access_token=account.access_token)
    good = outlook_account()
    assert imap_check_login(email=good.email, access_token=good.access_token) is None


def test_sync_service_runs_full_then_incremental_for_outlook(dovecot, outlook_account):
    account = outlook_account()
    seed(dovecot, account.email, 12)
    assert account_sync(account_id=account.pk).outcome == "ok"
    state = SyncState.objects.get(account=account)
    assert state.stage == SyncState.Stage.INCREMENTAL and state.status == SyncState.Status.IDLE
    seed(dovecot, account.email, 2, seed=3)
    assert account_sync(account_id=account.pk).outcome == "ok"
    assert db_view(account) == server_view(dovecot, account.email)
    assert Message.objects.filter(account=account).count() == 14
