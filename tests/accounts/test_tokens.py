"""Token services against the sandbox token endpoints: refresh, its expiry, two refreshers racing, reconnect state.

Accounts here get their tokens straight from the sandbox's registry (no consent round trip), so the
refresh requests are the only traffic the token endpoint sees.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from accounts.models import MailAccount
from accounts.services import (
    ReauthorizationRequired,
    account_access_token,
    account_connect,
    account_disconnect,
    account_mark_needs_reconnect,
)
from providers.base import TokenGrant
from providers.errors import ErrorCode, ProviderError
from providers.microsoft.provider import SCOPES as MICROSOFT_SCOPES

pytestmark = pytest.mark.usefixtures("sandbox_settings")

EMAIL = {"google": "alice@gmail.test", "microsoft": "alice@outlook.test"}
SCOPES = {
    "google": (
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/gmail.modify",
    ),
    "microsoft": (*MICROSOFT_SCOPES, "offline_access", "openid", "email"),
}
BOTH = pytest.mark.parametrize("provider", ["google", "microsoft"])
REVOKED_DETAIL = "Access to this mailbox was revoked or has expired. Reconnect it to resume syncing."


@pytest.fixture
def apps(google_app, microsoft_app):
    return {"google": google_app, "microsoft": microsoft_app}


def account_make(sandbox, app, user, provider: str, *, expires_in: timedelta | None, scopes: str = "") -> MailAccount:
    """A connected account holding a refresh token the sandbox issued, and an access token expiring as asked.

    The tokens belong to no common grant, so revoking one at the sandbox leaves the other: a test sees
    which one was sent.
    """
    email = EMAIL[provider]
    issue = dict(provider=provider, client_id=app.client_id, email=email, scopes=SCOPES[provider])
    refresh = sandbox.tokens.issue(kind="refresh", lifetime=None, **issue)
    access = sandbox.tokens.issue(kind="access", lifetime=3600, **issue)
    return MailAccount.objects.create(
        user=user,
        provider=provider,
        email=email,
        access_token=access.value,
        refresh_token=refresh.value,
        token_expires_at=None if expires_in is None else timezone.now() + expires_in,
        scopes=scopes,
    )


def calls(sandbox, provider: str) -> int:
    return getattr(sandbox, provider).token_endpoint_calls


@BOTH
def test_a_refreshed_token_is_saved_with_its_expiry_so_the_next_call_reuses_it(
    alice, sandbox, apps, provider, django_assert_num_queries
):
    account = account_make(sandbox, apps[provider], alice, provider, expires_in=timedelta(minutes=2), scopes="old")
    old_access = account.access_token
    new_access = account_access_token(account=account)
    assert new_access != old_access and calls(sandbox, provider) == 1
    assert sandbox.tokens.valid(new_access, kind="access", provider=provider)

    stored = MailAccount.objects.get(pk=account.pk)
    assert stored.access_token == new_access
    assert stored.token_expires_at > timezone.now() + timedelta(minutes=55)
    # The caller's copy of the row holds what was saved, so it keeps using it without asking the database.
    assert (account.access_token, account.refresh_token, account.token_expires_at) == (
        stored.access_token,
        stored.refresh_token,
        stored.token_expires_at,
    )
    with django_assert_num_queries(0):
        assert account_access_token(account=account) == new_access
    if provider == "microsoft":  # the scopes Microsoft granted replace the old ones
        assert MICROSOFT_SCOPES[0] in stored.scopes.split() and "old" not in stored.scopes.split()
    else:  # Google's refresh answer names no scopes: the old ones stay
        assert stored.scopes == "old"
    # A worker that loads the row later (every task does) uses the saved token: no second refresh.
    assert account_access_token(account=stored) == new_access
    assert account_access_token(account=MailAccount.objects.get(pk=account.pk)) == new_access
    assert calls(sandbox, provider) == 1


@pytest.mark.parametrize(
    "expires_in,refreshes",
    [
        (timedelta(minutes=5, seconds=30), False),  # just outside the 5-minute margin: used as it is
        (timedelta(minutes=4, seconds=30), True),  # just inside: refreshed before it dies
        (timedelta(minutes=-1), True),  # already expired
        (None, True),  # expiry unknown
    ],
)
def test_refreshed_only_within_the_margin_before_expiry(alice, sandbox, apps, expires_in, refreshes):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=expires_in)
    old_access = account.access_token
    assert (account_access_token(account=account) != old_access) is refreshes
    assert calls(sandbox, "google") == int(refreshes)


def test_an_account_without_an_access_token_gets_one(alice, sandbox, apps):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(hours=1))
    MailAccount.objects.filter(pk=account.pk).update(access_token="")
    token = account_access_token(account=MailAccount.objects.get(pk=account.pk))
    assert token and sandbox.tokens.valid(token, kind="access", provider="google")
    assert MailAccount.objects.get(pk=account.pk).access_token == token


@BOTH
def test_forced_refresh_of_a_fresh_token_asks_the_provider(alice, sandbox, apps, provider):
    """A 401 from the mail server: the token looked fresh but is not, so it is replaced."""
    account = account_make(sandbox, apps[provider], alice, provider, expires_in=timedelta(hours=1))
    old_access, old_refresh = account.access_token, account.refresh_token
    new_access = account_access_token(account=account, force_refresh=True)
    stored = MailAccount.objects.get(pk=account.pk)
    assert new_access != old_access and stored.access_token == new_access and calls(sandbox, provider) == 1
    if provider == "microsoft":  # rotated, and the new one kept: the old one is dead now
        assert stored.refresh_token != old_refresh
        assert sandbox.tokens.valid(stored.refresh_token, kind="refresh", provider=provider)
    else:
        assert stored.refresh_token == old_refresh


def _race(sandbox, provider: str, account_id: int, *, force_refresh: bool) -> tuple[list[str], list[BaseException]]:
    """Two workers, each with its own copy of the row and its own connection, refresh at once.

    The first one's request is held at the sandbox's token endpoint while the second one starts, so
    the second finds the row locked (PostgreSQL: waits on the row lock; SQLite: on the write lock)
    and must then use what the first one saved instead of refreshing again.
    """
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(started: threading.Event | None = None) -> None:
        try:
            account = MailAccount.objects.get(pk=account_id)
            if started is not None:
                started.set()
            results.append(account_access_token(account=account, force_refresh=force_refresh))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    hold = getattr(sandbox, provider).hold_token_endpoint(timeout=20)
    first = threading.Thread(target=worker)
    first.start()
    assert hold.arrived.wait(20), "the first refresh never reached the token endpoint"
    second_loaded = threading.Event()
    second = threading.Thread(target=worker, args=(second_loaded,))
    second.start()
    assert second_loaded.wait(20)
    _wait_until_blocked_on_a_lock()
    hold.release()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    return results, errors


def _wait_until_blocked_on_a_lock(timeout: float = 10) -> None:
    """PostgreSQL: wait (bounded) until another backend waits on a lock. SQLite cannot show this; return."""
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the second refresher never waited for the first one's lock")


@BOTH
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(90)
def test_two_workers_refreshing_at_once_call_the_provider_once(alice, sandbox, apps, provider):
    account = account_make(sandbox, apps[provider], alice, provider, expires_in=timedelta(minutes=1))
    results, errors = _race(sandbox, provider, account.pk, force_refresh=False)
    assert not errors, errors
    stored = MailAccount.objects.get(pk=account.pk)
    assert results == [stored.access_token] * 2 and stored.access_token != account.access_token
    assert calls(sandbox, provider) == 1
    assert stored.status == MailAccount.Status.ACTIVE
    assert sandbox.tokens.valid(stored.refresh_token, kind="refresh", provider=provider)


@BOTH
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(90)
def test_two_forced_refreshes_of_one_rejected_token_call_the_provider_once(alice, sandbox, apps, provider):
    """Two workers got a 401 with the same token: the second uses the token the first one just saved."""
    account = account_make(sandbox, apps[provider], alice, provider, expires_in=timedelta(hours=1))
    results, errors = _race(sandbox, provider, account.pk, force_refresh=True)
    assert not errors, errors
    stored = MailAccount.objects.get(pk=account.pk)
    assert results == [stored.access_token] * 2 and stored.access_token != account.access_token
    assert calls(sandbox, provider) == 1
    assert sandbox.tokens.valid(stored.refresh_token, kind="refresh", provider=provider)


@BOTH
def test_a_revoked_grant_becomes_the_reconnect_state(alice, sandbox, apps, provider, caplog):
    caplog.set_level(logging.INFO, logger="accounts.services")
    account = account_make(sandbox, apps[provider], alice, provider, expires_in=timedelta(minutes=1))
    getattr(sandbox, provider).revoke_user(EMAIL[provider])
    with pytest.raises(ReauthorizationRequired) as excinfo:
        account_access_token(account=account)
    assert excinfo.value.code == ErrorCode.ACCESS_REVOKED
    stored = MailAccount.objects.get(pk=account.pk)
    assert (stored.status, stored.status_reason) == (MailAccount.Status.REAUTH_REQUIRED, ErrorCode.ACCESS_REVOKED)
    assert stored.status_message == REVOKED_DETAIL
    assert f"Account {account.pk} needs reconnecting (access_revoked)" in caplog.messages
    assert account.refresh_token not in caplog.text
    # From now on nothing is asked of the provider, whichever copy of the row a worker holds.
    for copy in (account, stored):
        with pytest.raises(ReauthorizationRequired, match="access_revoked"):
            account_access_token(account=copy, force_refresh=True)
    assert calls(sandbox, provider) == 1


@pytest.mark.parametrize("status", [MailAccount.Status.REAUTH_REQUIRED, MailAccount.Status.NO_MAILBOX])
def test_an_account_waiting_for_reconnect_is_not_refreshed(alice, sandbox, apps, status):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(minutes=1))
    account.status = status
    with pytest.raises(ReauthorizationRequired) as excinfo:
        account_access_token(account=account)
    assert excinfo.value.code == ErrorCode.ACCESS_REVOKED  # no reason recorded: the generic one
    account.status_reason = ErrorCode.NO_MAILBOX
    with pytest.raises(ReauthorizationRequired) as excinfo:
        account_access_token(account=account)
    assert excinfo.value.code == ErrorCode.NO_MAILBOX
    assert calls(sandbox, "google") == 0


def test_a_temporary_refresh_failure_changes_nothing(alice, sandbox, apps):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(minutes=1))
    before = MailAccount.objects.filter(pk=account.pk).values().get()
    sandbox.google.fail_token_endpoint(times=10, status=503)
    with pytest.raises(ProviderError):
        account_access_token(account=account)
    after = MailAccount.objects.filter(pk=account.pk).values().get()
    assert after == before  # still active, still the old tokens: the next try refreshes again


def _grant(provider: str, *, refresh: str | None, name: str = "", access: str = "new-access") -> TokenGrant:
    return TokenGrant(
        access_token=access,
        refresh_token=refresh,
        expires_at=timezone.now() + timedelta(hours=1),
        scopes=SCOPES[provider],
        email=EMAIL["google"],
        name=name,
    )


def test_reconnecting_clears_the_stale_revoked_detail(client, alice, sandbox, apps):
    """A mailbox marked "revoked" that the user reconnects shows as connected, with no old explanation left."""
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(minutes=1))
    sandbox.google.revoke_user(EMAIL["google"])
    with pytest.raises(ReauthorizationRequired):
        account_access_token(account=account)
    client.force_login(alice)
    assert REVOKED_DETAIL in client.get("/accounts/").content.decode()

    response = client.post("/accounts/connect/google/", {"sync_window": "90", "login_hint": EMAIL["google"]})
    back = urlsplit(sandbox.google.consent(response["Location"]))
    assert client.get(f"{back.path}?{back.query}").status_code == 302
    stored = MailAccount.objects.get(pk=account.pk)
    assert (stored.status, stored.status_reason) == (MailAccount.Status.ACTIVE, "")
    assert REVOKED_DETAIL not in client.get("/accounts/").content.decode()
    assert account_access_token(account=stored) == stored.access_token


def test_reconnect_keeps_what_the_new_grant_lacks(alice, db):
    """Google sends no refresh token (and maybe no name) when the user already consented: keep the old ones."""
    first, created = account_connect(
        user_id=alice.pk, provider_id="google", grant=_grant("google", refresh="refresh-1", name="Alice A.")
    )
    assert created and (first.refresh_token, first.display_name) == ("refresh-1", "Alice A.")
    assert first.scopes == " ".join(SCOPES["google"])
    again, created = account_connect(
        user_id=alice.pk, provider_id="google", grant=_grant("google", refresh=None, access="newer-access")
    )
    stored = MailAccount.objects.get(pk=first.pk)
    assert not created and again.pk == first.pk and MailAccount.objects.count() == 1
    assert (stored.refresh_token, stored.display_name, stored.access_token) == ("refresh-1", "Alice A.", "newer-access")
    account_connect(user_id=alice.pk, provider_id="google", grant=_grant("google", refresh="refresh-2", name="Al"))
    stored = MailAccount.objects.get(pk=first.pk)
    assert (stored.refresh_token, stored.display_name) == ("refresh-2", "Al")


def test_a_first_connection_without_offline_access_is_refused(alice, db):
    with pytest.raises(ProviderError) as excinfo:
        account_connect(user_id=alice.pk, provider_id="google", grant=_grant("google", refresh=None))
    assert str(excinfo.value) == (
        "The provider did not grant offline access, so Mailhub could not keep this mailbox in sync."
    )
    assert not MailAccount.objects.exists()


def test_disconnect_revokes_the_refresh_token_and_deletes_the_account(alice, sandbox, apps):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(hours=1))
    access, refresh = account.access_token, account.refresh_token
    account_disconnect(account=account)
    assert not MailAccount.objects.filter(pk=account.pk).exists()
    assert sandbox.tokens.get(refresh).revoked and not sandbox.tokens.get(access).revoked


def test_disconnect_revokes_the_access_token_when_there_is_no_refresh_token(alice, sandbox, apps):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(hours=1))
    refresh = account.refresh_token
    account.refresh_token = ""
    account_disconnect(account=account)
    assert sandbox.tokens.get(account.access_token).revoked and not sandbox.tokens.get(refresh).revoked
    assert not MailAccount.objects.filter(pk=account.pk).exists()


def test_disconnect_after_the_provider_app_was_removed_still_deletes(alice, sandbox, apps):
    account = account_make(sandbox, apps["google"], alice, "google", expires_in=timedelta(hours=1))
    apps["google"].delete()
    account_disconnect(account=account)
    assert not MailAccount.objects.filter(pk=account.pk).exists()
    assert not sandbox.tokens.get(account.refresh_token).revoked  # nobody could ask Google


def test_marking_for_reconnect_writes_once_per_reason_and_a_new_reason_replaces_the_old(alice, caplog):
    caplog.set_level(logging.INFO, logger="accounts.services")
    account = MailAccount.objects.create(user=alice, provider="google", email="mark@example.org")
    account_mark_needs_reconnect(account=account, reason=ErrorCode.ACCESS_REVOKED)
    account_mark_needs_reconnect(account=account, reason=ErrorCode.ACCESS_REVOKED)  # the engine, after the service
    assert [r.getMessage() for r in caplog.records].count(
        f"Account {account.pk} needs reconnecting (access_revoked)"
    ) == 1
    stored = MailAccount.objects.get(pk=account.pk)
    assert (stored.status, stored.status_reason) == (MailAccount.Status.REAUTH_REQUIRED, ErrorCode.ACCESS_REVOKED)

    account_mark_needs_reconnect(account=account, reason=ErrorCode.NO_MAILBOX)  # a new reason is written
    stored = MailAccount.objects.get(pk=account.pk)
    assert (stored.status, stored.status_reason) == (MailAccount.Status.NO_MAILBOX, ErrorCode.NO_MAILBOX)


def test_an_active_account_with_a_leftover_reason_is_still_marked(alice):
    account = MailAccount.objects.create(
        user=alice, provider="google", email="left@example.org", status_reason=ErrorCode.ACCESS_REVOKED
    )
    account_mark_needs_reconnect(account=account, reason=ErrorCode.ACCESS_REVOKED)
    assert MailAccount.objects.get(pk=account.pk).needs_reconnect


def test_the_reconnect_error_names_its_code_for_the_logs():
    error = ReauthorizationRequired(code=ErrorCode.PASSWORD_REFUSED)
    assert str(error) == "The mailbox must be reconnected (password_refused)." and error.code == "password_refused"
