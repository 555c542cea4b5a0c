"""The Gmail engine against the sandbox Gmail API over real HTTP: full and incremental sync."""

import pytest

from mailbox import sync
from mailbox.models import Folder, Message, SyncState, Thread

pytestmark = pytest.mark.django_db(transaction=True)


def _db_state(account):
    """{remote_id: (sorted folder remote ids, is_read, is_starred)} as stored."""
    out = {}
    for m in Message.objects.filter(account=account).prefetch_related("folders"):
        out[m.remote_id] = (sorted(f.remote_id for f in m.folders.all()), m.is_read, m.is_starred)
    return out


def _box_state(mailbox):
    folders = {"INBOX", "SENT", "DRAFT", "TRASH", "SPAM", "STARRED", "IMPORTANT"}
    out = {}
    for m in mailbox.store.messages(mailbox.email):
        labels = set(m.label_ids)
        shown = sorted(label for label in labels if label in folders or label.startswith("Label_"))
        out[m.id] = (shown, "UNREAD" not in labels, "STARRED" in labels)
    return out


def test_full_sync_stores_every_message_with_labels_and_threads(gmail_account, gmail_mailbox):
    gmail_mailbox.seed(60)
    result = sync.account_sync(account_id=gmail_account.pk)
    assert result.outcome == "ok"
    assert _db_state(gmail_account) == _box_state(gmail_mailbox)
    state = SyncState.objects.get(account=gmail_account)
    assert state.stage == SyncState.Stage.INCREMENTAL and state.status == SyncState.Status.IDLE
    assert state.cursor and state.progress_done == state.progress_total == 60
    assert state.last_success_at and not state.lock_owner
    threads = gmail_mailbox.store.threads(gmail_mailbox.email)
    assert Thread.objects.filter(account=gmail_account).count() == len(threads)
    for message in Message.objects.filter(account=gmail_account).select_related("thread"):
        assert message.raw == gmail_mailbox.store.message(gmail_mailbox.email, message.remote_id).raw
        assert message.remote_id in threads[message.thread.remote_id]
    assert Folder.objects.get(account=gmail_account, remote_id="INBOX").role == Folder.Role.INBOX
    # Running it again changes nothing.
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert Message.objects.filter(account=gmail_account).count() == 60


def _assert_db_equals_mailbox(account, mailbox):
    db = _db_state(account)
    box = _box_state(mailbox)
    assert set(db) == set(box), f"missing={set(box) - set(db)} extra={set(db) - set(box)}"
    assert db == box
    assert Message.objects.filter(account=account).values("remote_id").distinct().count() == len(box)
    for thread in Thread.objects.filter(account=account):
        rows = Message.objects.filter(thread=thread)
        assert thread.message_count == rows.count()
        assert thread.unread_count == rows.filter(is_read=False).count()


def test_incremental_sync_applies_adds_deletes_and_label_changes(gmail_account, gmail_mailbox, sandbox_settings):
    ids = gmail_mailbox.seed(20)
    sync.account_sync(account_id=gmail_account.pk)
    box = gmail_mailbox.store
    label = box.create_label(gmail_mailbox.email, "Projects")
    new_id = gmail_mailbox.deliver(subject="Fresh news")
    box.modify(gmail_mailbox.email, ids[0], add=["STARRED", label], remove=["UNREAD", "INBOX"])
    box.modify(gmail_mailbox.email, ids[1], add=["UNREAD"], remove=["STARRED"])
    box.modify(gmail_mailbox.email, ids[2], add=[label])
    box.modify(gmail_mailbox.email, ids[2], remove=[label])
    box.trash(gmail_mailbox.email, ids[3])
    box.delete(gmail_mailbox.email, ids[4])
    added_then_deleted = gmail_mailbox.deliver(subject="Gone before sync")
    box.delete(gmail_mailbox.email, added_then_deleted)
    box.reset_stats()

    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)
    assert Message.objects.get(account=gmail_account, remote_id=new_id).subject == "Fresh news"
    assert Folder.objects.get(account=gmail_account, remote_id=label).name == "Projects"
    stats = box.stats(gmail_mailbox.email)
    assert stats.get("messages.list", 0) == 0  # incremental: history, not a listing
    assert stats.get("messages.get", 0) == 1  # only the one new message was fetched


def test_incremental_with_nothing_changed_is_two_requests(gmail_account, gmail_mailbox):
    gmail_mailbox.seed(5)
    sync.account_sync(account_id=gmail_account.pk)
    gmail_mailbox.store.reset_stats()
    sync.account_sync(account_id=gmail_account.pk)
    assert gmail_mailbox.store.stats(gmail_mailbox.email).get("http_requests") == 2  # labels, history


def test_expired_history_triggers_reconciling_full_resync(gmail_account, gmail_mailbox):
    ids = gmail_mailbox.seed(25)
    sync.account_sync(account_id=gmail_account.pk)
    box = gmail_mailbox.store
    box.delete(gmail_mailbox.email, ids[0])
    box.modify(gmail_mailbox.email, ids[1], add=["STARRED"], remove=["UNREAD", "INBOX"])
    new_id = gmail_mailbox.deliver(subject="after expiry")
    box.expire_history(gmail_mailbox.email)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)
    assert Message.objects.filter(account=gmail_account, remote_id=new_id).exists()
    state = SyncState.objects.get(account=gmail_account)
    assert state.stage == SyncState.Stage.INCREMENTAL and int(state.cursor) == box.history_id(gmail_mailbox.email)


def test_throttling_and_server_error_storms_lose_nothing(gmail_account, gmail_mailbox, settings):
    settings.GMAIL_BATCH_SIZE = 10
    gmail_mailbox.seed(80)
    box = gmail_mailbox.store
    box.quota_enabled = True
    box.quota_units_per_second = 150  # tighter than the client paces for: real 429s happen
    box.fail_next(15, status=429, retry_after=0.2, method="messages.get", email=gmail_mailbox.email)
    box.fail_next(5, status=403, method="messages.get", email=gmail_mailbox.email)
    box.fail_next(2, status=500, method="messages.list", email=gmail_mailbox.email)
    box.fail_rate(0.1, status=503, seed=7)
    try:
        assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    finally:
        box.fail_rate(0)
    stats = box.stats(gmail_mailbox.email)
    assert stats.get("throttled", 0) + stats.get("injected_failures", 0) > 20
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)


def test_long_retry_after_ends_the_sync_for_later_and_resume_completes(gmail_account, gmail_mailbox):
    gmail_mailbox.seed(30)
    gmail_mailbox.store.fail_next(1, status=429, retry_after=900, method="messages.list", email=gmail_mailbox.email)
    result = sync.account_sync(account_id=gmail_account.pk)
    assert result.outcome == "retry" and result.retry_after >= 900
    state = SyncState.objects.get(account=gmail_account)
    assert state.status == SyncState.Status.ERROR and state.last_error_code == "throttled"
    assert "slow down" in state.error_message and "throttl" in state.last_error
    assert state.next_attempt_at and not state.lock_owner
    assert gmail_account.pk not in sync.accounts_due_for_sync()
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)
    state.refresh_from_db()
    assert state.failure_count == 0 and state.last_error == state.last_error_code == ""


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the sync catches it or cleans up."""


def test_worker_killed_mid_sync_then_resumed_ends_equal_to_mailbox(gmail_account, gmail_mailbox, monkeypatch, settings):
    from mailbox import store

    settings.GMAIL_BATCH_SIZE = 10
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0  # pacing off: speed
    ids = gmail_mailbox.seed(450)
    real = store.messages_upsert
    calls = {"n": 0}

    def dying_upsert(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise WorkerKilled
        return real(**kwargs)

    monkeypatch.setattr(store, "messages_upsert", dying_upsert)
    with pytest.raises(WorkerKilled):
        sync.account_sync(account_id=gmail_account.pk)
    monkeypatch.setattr(store, "messages_upsert", real)
    stored = Message.objects.filter(account=gmail_account).count()
    assert 0 < stored < 450
    state = SyncState.objects.get(account=gmail_account)
    assert state.lock_owner and state.resume.get("history_id")
    # The dead worker's lock holds until it expires; meanwhile the mailbox changes.
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "busy"
    box = gmail_mailbox.store
    box.delete(gmail_mailbox.email, ids[-1])
    box.modify(gmail_mailbox.email, ids[0], add=["STARRED"])
    gmail_mailbox.deliver(subject="arrived while the worker was dead")
    SyncState.objects.filter(pk=state.pk).update(lock_expires_at=state.lock_expires_at.replace(year=2000))
    box.reset_stats()
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)
    # It resumed: what was stored before the kill was not fetched again.
    assert box.stats(gmail_mailbox.email).get("messages.get", 0) <= 450 - stored + 2


def test_revoked_access_stops_syncing_without_retry_loop(gmail_account, gmail_mailbox, sandbox_settings):
    from mailbox.tasks import account_sync

    gmail_mailbox.seed(3)
    sandbox_settings.tokens.revoke_user(gmail_account.email)
    gmail_mailbox.store.reset_stats()
    outcome = account_sync.apply(args=[gmail_account.pk]).get()
    assert outcome == "stopped"
    gmail_account.refresh_from_db()
    assert gmail_account.status == gmail_account.Status.REAUTH_REQUIRED
    state = SyncState.objects.get(account=gmail_account)
    assert state.status == SyncState.Status.STOPPED and "Reconnect" in state.error_message
    assert gmail_account.access_token not in state.last_error
    assert gmail_account.pk not in sync.accounts_due_for_sync()
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "stopped"
    assert gmail_mailbox.store.stats(gmail_mailbox.email).get("http_requests", 0) <= 1


def test_expired_access_token_is_refreshed_transparently(gmail_account, gmail_mailbox, sandbox_settings):
    gmail_mailbox.seed(3)
    sandbox_settings.tokens.expire_access_tokens(gmail_account.email)
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert Message.objects.filter(account=gmail_account).count() == 3


def test_two_syncs_of_one_account_never_run_at_once(gmail_account, gmail_mailbox, settings):
    import threading

    from django.db import connection

    settings.GMAIL_QUOTA_UNITS_PER_SECOND = 0
    gmail_mailbox.seed(200)
    outcomes = []

    def run():
        try:
            outcomes.append(sync.account_sync(account_id=gmail_account.pk).outcome)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(repr(exc))
        finally:
            connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") >= 1 and set(outcomes) <= {"ok", "busy"}, outcomes
    _assert_db_equals_mailbox(gmail_account, gmail_mailbox)


def test_sync_since_limits_the_first_sync(alice, google_app, sandbox_settings):
    from datetime import timedelta

    from django.utils import timezone

    from tests.fixtures.mail import GmailMailbox, gmail_account_create

    account = gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice)
    mailbox = GmailMailbox(store=sandbox_settings.gmail, email=account.email)
    now = timezone.now()
    old = mailbox.store.insert_message(account.email, b"Subject: old\r\n\r\nx", internal_date=now - timedelta(days=200))
    recent = mailbox.store.insert_message(account.email, b"Subject: new\r\n\r\ny", internal_date=now - timedelta(3))
    sync.account_sync_start(account=account)  # default: the last 90 days
    assert SyncState.objects.get(account=account).sync_since == timezone.localdate() - timedelta(days=90)
    assert sync.account_sync(account_id=account.pk).outcome == "ok"
    assert set(Message.objects.filter(account=account).values_list("remote_id", flat=True)) == {recent}
    assert old


def test_missing_gmail_permission_or_mailbox_asks_the_user(alice, google_app, sandbox_settings):
    from accounts.models import MailAccount
    from tests.fixtures.mail import gmail_account_create

    narrow = gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice, scopes=("openid", "email"))
    assert sync.account_sync(account_id=narrow.pk).outcome == "stopped"
    narrow.refresh_from_db()
    assert narrow.status == MailAccount.Status.REAUTH_REQUIRED and narrow.status_reason == "access_denied"
    assert "Reconnect" in narrow.status_message

    no_mail = gmail_account_create(sandbox=sandbox_settings, app=google_app, user=alice)
    sandbox_settings.gmail.disable_mail(no_mail.email)
    assert sync.account_sync(account_id=no_mail.pk).outcome == "stopped"
    no_mail.refresh_from_db()
    assert no_mail.status == MailAccount.Status.NO_MAILBOX
    assert SyncState.objects.get(account=no_mail).status == SyncState.Status.STOPPED
