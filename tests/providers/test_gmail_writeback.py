"""Write-back: a user's change applies locally at once and reaches Gmail; the next sync agrees."""

import pytest

from mailbox import sync, writeback
from mailbox.local import account_client, local_messages
from mailbox.models import Message, MessageFolder
from mailbox.tasks import messages_change_apply
from providers.base import ChangeKind, MessageChange
from providers.errors import ProviderError

pytestmark = pytest.mark.django_db(transaction=True)


def _labels(mailbox, remote_id):
    return set(mailbox.store.message(mailbox.email, remote_id).label_ids)


def _folders(message):
    return set(MessageFolder.objects.filter(message=message).values_list("folder__remote_id", flat=True))


@pytest.fixture
def synced(gmail_account, gmail_mailbox):
    label = gmail_mailbox.store.create_label(gmail_mailbox.email, "Receipts")
    ids = [gmail_mailbox.deliver(subject=f"m{n}") for n in range(4)]
    sync.account_sync(account_id=gmail_account.pk)
    return ids, label


def _change(alice, account, remote_ids, kind, folder=""):
    pks = list(Message.objects.filter(account=account, remote_id__in=remote_ids).values_list("pk", flat=True))
    change = MessageChange(kind=kind, folder_remote_id=folder)
    count = writeback.messages_change(user=alice, message_ids=pks, change=change)
    return pks, change, count


@pytest.mark.parametrize(
    ("kind", "use_label", "local_check", "remote_check"),
    [
        (ChangeKind.READ, False, lambda m, f: m.is_read, lambda labels, _: "UNREAD" not in labels),
        (ChangeKind.STAR, False, lambda m, f: m.is_starred, lambda labels, _: "STARRED" in labels),
        (ChangeKind.ARCHIVE, False, lambda m, f: "INBOX" not in f, lambda labels, _: "INBOX" not in labels),
        (ChangeKind.TRASH, False, lambda m, f: "TRASH" in f and "INBOX" not in f, lambda labels, _: "TRASH" in labels),
        (ChangeKind.ADD_LABEL, True, lambda m, f: "Label_1" in f or len(f) > 1, lambda labels, lab: lab in labels),
        (ChangeKind.MOVE, True, lambda m, f: "INBOX" not in f, lambda ls, lab: lab in ls and "INBOX" not in ls),
    ],
)
def test_change_applies_locally_then_at_gmail(
    alice, gmail_account, gmail_mailbox, synced, kind, use_label, local_check, remote_check
):
    ids, label = synced
    pks, change, count = _change(alice, gmail_account, ids[:2], kind, label if use_label else "")
    assert count == 2
    for message in Message.objects.filter(pk__in=pks):
        assert local_check(message, _folders(message))  # at once, before Gmail heard of it
    assert messages_change_apply.apply(args=[gmail_account.pk, pks, str(kind), change.folder_remote_id]).get() == "ok"
    for remote_id in ids[:2]:
        assert remote_check(_labels(gmail_mailbox, remote_id), label)
    for remote_id in ids[2:]:
        assert _labels(gmail_mailbox, remote_id) == {"INBOX", "UNREAD"}
    before = {m.remote_id: (_folders(m), m.is_read, m.is_starred) for m in Message.objects.filter(pk__in=pks)}
    sync.account_sync(account_id=gmail_account.pk)  # the echo of our own change agrees with the local state
    after = {m.remote_id: (_folders(m), m.is_read, m.is_starred) for m in Message.objects.filter(pk__in=pks)}
    assert before == after


def test_untrash_unarchive_unstar_and_remove_label(alice, gmail_account, gmail_mailbox, synced):
    ids, label = synced
    for kind, folder in [
        (ChangeKind.TRASH, ""),
        (ChangeKind.UNTRASH, ""),
        (ChangeKind.ARCHIVE, ""),
        (ChangeKind.UNARCHIVE, ""),
        (ChangeKind.STAR, ""),
        (ChangeKind.UNSTAR, ""),
        (ChangeKind.ADD_LABEL, label),
        (ChangeKind.REMOVE_LABEL, label),
        (ChangeKind.UNREAD, ""),
    ]:
        pks, change, _ = _change(alice, gmail_account, ids[:1], kind, folder)
        messages_change_apply.apply(args=[gmail_account.pk, pks, str(kind), folder]).get()
    assert _labels(gmail_mailbox, ids[0]) == {"INBOX", "UNREAD"}
    sync.account_sync(account_id=gmail_account.pk)
    message = Message.objects.get(account=gmail_account, remote_id=ids[0])
    assert _folders(message) == {"INBOX"} and not message.is_read and not message.is_starred


def test_other_users_messages_are_untouched(bob, gmail_account, gmail_mailbox, synced):
    ids, _ = synced
    pks = list(Message.objects.filter(account=gmail_account).values_list("pk", flat=True))
    assert writeback.undo_plan(user=bob, message_ids=pks, change=MessageChange(ChangeKind.READ)) is None
    assert writeback.messages_change(user=bob, message_ids=pks, change=MessageChange(ChangeKind.READ)) == 0
    assert not Message.objects.filter(account=gmail_account, is_read=True).exists()


def test_writeback_throttled_is_retried_not_lost(alice, gmail_account, gmail_mailbox, synced):
    ids, _ = synced
    pks, change, _ = _change(alice, gmail_account, ids, ChangeKind.READ)
    gmail_mailbox.store.fail_next(2, status=429, retry_after=0.1, email=gmail_mailbox.email)
    assert writeback.messages_change_apply(account_id=gmail_account.pk, message_ids=pks, change=change).outcome == "ok"
    assert all("UNREAD" not in _labels(gmail_mailbox, i) for i in ids)


def test_delete_forever_is_refused_on_gmail_and_nothing_is_lost(alice, gmail_account, gmail_mailbox, synced):
    """messages.delete needs the full-mail scope Mailhub does not ask for: the client refuses, Gmail keeps it."""
    ids, _ = synced
    messages = list(Message.objects.filter(account=gmail_account, remote_id__in=ids[:1]))
    with pytest.raises(ProviderError):
        account_client(gmail_account).apply_changes(
            messages=local_messages(messages), change=MessageChange(ChangeKind.DELETE_FOREVER)
        )
    assert _labels(gmail_mailbox, ids[0]) == {"INBOX", "UNREAD"}
