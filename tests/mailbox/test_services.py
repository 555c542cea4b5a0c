"""Sync orchestration, queueing and write-back services (provider-independent parts)."""

from datetime import date, timedelta

import pytest
from django.utils import timezone

from accounts.models import MailAccount
from mailbox import outbox, store, sync, writeback
from mailbox.models import Folder, Message, OutgoingMessage, SyncState
from providers.base import ChangeKind, MessageChange
from tests.fixtures.ui import provider_on

pytestmark = pytest.mark.django_db


def test_sync_start_sets_range_and_queues_after_commit(mail_account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        state = sync.account_sync_start(account=mail_account)
    assert state.sync_since == timezone.localdate() - timedelta(days=90)
    assert state.stage == SyncState.Stage.PENDING and len(callbacks) == 1
    assert sync.account_sync_start(account=mail_account, since=None).sync_since is None
    assert sync.account_sync_start(account=mail_account, since=date(2020, 1, 2)).sync_since == date(2020, 1, 2)


def test_sync_now_queues_on_commit_only(mail_account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        sync.account_sync_queue(account=mail_account)
    assert len(callbacks) == 1


def test_account_needing_reconnect_is_stopped_without_network(mail_account):
    mail_account.status = MailAccount.Status.REAUTH_REQUIRED
    mail_account.status_reason = "access_denied"
    mail_account.save()
    assert sync.account_sync(account_id=mail_account.pk).outcome == "stopped"
    state = SyncState.objects.get(account=mail_account)
    assert state.status == SyncState.Status.STOPPED and state.last_error_code == "access_denied"
    assert sync.account_sync(account_id=10**9).outcome == "missing"


def test_a_live_lock_makes_sync_busy(mail_account):
    SyncState.objects.create(
        account=mail_account, lock_owner="other-worker", lock_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert sync.account_sync(account_id=mail_account.pk).outcome == "busy"
    assert SyncState.objects.get(account=mail_account).lock_owner == "other-worker"


def test_accounts_due_for_sync_skips_reconnect_running_backing_off_and_provider_off(alice, mail_account, bob_account):
    from accounts.models import MailAccount as Account

    provider_on("google")
    off = Account.objects.create(user=alice, provider="microsoft", email="v@example.org")  # no app: turned off
    stopped = Account.objects.create(user=alice, provider="google", email="x@example.org", status="reauth_required")
    waiting = Account.objects.create(user=alice, provider="google", email="y@example.org")
    running = Account.objects.create(user=alice, provider="google", email="z@example.org")
    expired = Account.objects.create(user=alice, provider="google", email="w@example.org")
    later = timezone.now() + timedelta(minutes=5)
    SyncState.objects.create(account=waiting, next_attempt_at=later)
    SyncState.objects.create(account=running, lock_owner="w1", lock_expires_at=later)
    SyncState.objects.create(account=expired, lock_owner="dead", lock_expires_at=timezone.now() - timedelta(1))
    due = set(sync.accounts_due_for_sync())
    assert {mail_account.pk, bob_account.pk, expired.pk} <= due
    assert not due & {stopped.pk, waiting.pk, running.pk, off.pk}
    provider_on("microsoft")
    assert off.pk in set(sync.accounts_due_for_sync())


def test_messages_change_only_touches_own_messages(
    alice, mail_account, bob_account, make_raw, django_capture_on_commit_callbacks
):
    inbox = store.folder_upsert(account=mail_account, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)
    mine = store.message_upsert(account=mail_account, remote_id="a", raw=make_raw(), folders=[inbox])
    theirs = store.message_upsert(account=bob_account, remote_id="b", raw=make_raw())
    with django_capture_on_commit_callbacks() as callbacks:
        count = writeback.messages_change(
            user=alice, message_ids=[mine.pk, theirs.pk], change=MessageChange(ChangeKind.ARCHIVE)
        )
    assert count == 1 and len(callbacks) == 1
    assert not Message.objects.get(pk=mine.pk).folders.exists()
    with django_capture_on_commit_callbacks():
        writeback.messages_change(user=alice, message_ids=[mine.pk, theirs.pk], change=MessageChange(ChangeKind.READ))
    assert Message.objects.get(pk=mine.pk).is_read and not Message.objects.get(pk=theirs.pk).is_read


def test_outgoing_queue_builds_mime_once(mail_account, make_raw, django_capture_on_commit_callbacks):
    source = store.message_upsert(
        account=mail_account, remote_id="s", raw=make_raw(message_id="orig@x", references="<root@x>")
    )
    outgoing = OutgoingMessage.objects.create(
        account=mail_account,
        kind=OutgoingMessage.Kind.REPLY,
        source=source,
        subject="Re: Hello",
        to=[{"name": "Sam", "email": "sam@example.org"}],
        body_text="Thanks",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        outbox.outgoing_queue(outgoing=outgoing)
    assert len(callbacks) == 1
    outgoing.refresh_from_db()
    raw = bytes(outgoing.raw)
    assert f"Message-ID: <{outgoing.message_id}>".encode() in raw
    assert b"In-Reply-To: <orig@x>" in raw and b"References: <root@x> <orig@x>" in raw
    assert outgoing.status == OutgoingMessage.Status.QUEUED
