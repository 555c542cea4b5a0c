"""Each folder's message and unread counts (kept by database triggers) always equal what its memberships say:
after a sync stores mail, flags change, mail moves, and messages, folders or whole mailboxes go."""

from datetime import UTC, datetime

import pytest

from mailbox import store
from mailbox.folder_counts import folder_counts_counted, folder_counts_recount
from mailbox.models import Folder, Message, MessageFolder

pytestmark = pytest.mark.django_db


def _stored() -> dict[int, tuple[int, int]]:
    return {f.pk: (f.message_count, f.unread_count) for f in Folder.objects.all()}


def _assert_counts_right() -> None:
    """Every folder's stored counts are the ones its memberships give (none: 0 and 0)."""
    counted = folder_counts_counted()
    assert _stored() == {pk: counted.get(pk, (0, 0)) for pk in Folder.objects.values_list("pk", flat=True)}


def _counts(folder: Folder) -> tuple[int, int]:
    folder.refresh_from_db()
    return folder.message_count, folder.unread_count


@pytest.fixture
def inbox(mail_account):
    return store.folder_upsert(account=mail_account, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)


@pytest.fixture
def work(mail_account):
    return store.folder_upsert(account=mail_account, remote_id="Label_1", name="Work")


@pytest.fixture
def synced(mail_account, inbox, work, make_raw):
    """Six messages stored as a sync stores them: g0-g3 in the Inbox (g0 read), g4-g5 in Inbox and Work."""
    items = [
        store.IncomingMessage(
            remote_id=f"g{n}",
            raw=make_raw(subject=f"n{n}"),
            folders=[inbox] if n < 4 else [inbox, work],
            is_read=n == 0,
            thread_key=f"t{n % 2}",
            internal_date=datetime(2026, 1, n + 1, tzinfo=UTC),
        )
        for n in range(6)
    ]
    store.messages_upsert(account=mail_account, items=items)


def test_a_sync_counts_the_mail_it_stores_and_a_second_one_changes_nothing(mail_account, inbox, work, synced):
    assert _counts(inbox) == (6, 5) and _counts(work) == (2, 2)
    _assert_counts_right()
    again = [store.IncomingMessage(remote_id="g0", raw=b"", folders=[inbox], is_read=True)]
    store.messages_upsert(account=mail_account, items=again)  # known: only its state is applied, unchanged
    assert _counts(inbox) == (6, 5)


def test_read_and_unread_move_the_unread_count_of_every_folder_the_message_is_in(mail_account, inbox, work, synced):
    store.message_flags_update(account=mail_account, remote_ids=["g4", "g1"], is_read=True)
    assert _counts(inbox) == (6, 3) and _counts(work) == (2, 1)
    store.message_flags_update(account=mail_account, remote_ids=["g4"], is_read=True)  # already read
    assert _counts(inbox) == (6, 3)
    store.message_flags_update(account=mail_account, remote_ids=["g4", "g0"], is_read=False)
    assert _counts(inbox) == (6, 5) and _counts(work) == (2, 2)
    store.message_flags_update(account=mail_account, remote_ids=["g5"], is_starred=True)  # not a read change
    assert _counts(work) == (2, 2)
    Message.objects.filter(remote_id__in=["g2", "g3"]).update(is_read=True)  # any writer, not only the store
    assert _counts(inbox) == (6, 3)
    _assert_counts_right()


def test_moves_and_label_changes_move_both_counts(mail_account, inbox, work, synced):
    store.message_folders_change(account=mail_account, remote_ids=["g1", "g0"], add=[work], remove=[inbox])
    assert _counts(inbox) == (4, 4) and _counts(work) == (4, 3)
    store.message_folders_change(account=mail_account, remote_ids=["g1"], add=[work])  # already there
    assert _counts(work) == (4, 3)
    state = store.MessageState(folders=[inbox], is_read=True, is_starred=False)
    store.messages_state_set(account=mail_account, states={"g5": state, "g2": state})  # one move, one flag
    assert _counts(inbox) == (4, 2) and _counts(work) == (3, 2)
    store.message_folders_set(account=mail_account, remote_id="g3", folders=[work], uid_by_folder={work.pk: 7})
    assert _counts(inbox) == (3, 1) and _counts(work) == (4, 3)
    MessageFolder.objects.filter(folder=work).update(uid=9)  # a UID is no move
    assert _counts(work) == (4, 3)
    MessageFolder.objects.filter(folder=work, message__remote_id="g3").update(folder=inbox)
    assert _counts(inbox) == (4, 2) and _counts(work) == (3, 2)
    _assert_counts_right()


def test_deleted_messages_folders_and_mailboxes_leave_no_count_behind(
    mail_account, bob_account, inbox, work, synced, make_raw
):
    bobs_inbox = store.folder_upsert(account=bob_account, remote_id="INBOX", name="Inbox", role=Folder.Role.INBOX)
    store.message_upsert(account=bob_account, remote_id="b1", raw=make_raw(subject="b"), folders=[bobs_inbox])
    store.messages_delete(account=mail_account, remote_ids=["g0", "g4", "nope"])
    assert _counts(inbox) == (4, 4) and _counts(work) == (1, 1)
    store.folder_delete(account=mail_account, remote_id="Label_1")
    assert _counts(inbox) == (4, 4)
    _assert_counts_right()
    mail_account.delete()
    assert _counts(bobs_inbox) == (1, 1)
    _assert_counts_right()


def test_a_folder_saved_from_an_old_copy_keeps_the_counts_mail_gave_it(mail_account, inbox, make_raw):
    stale = Folder.objects.get(pk=inbox.pk)
    store.message_upsert(account=mail_account, remote_id="g1", raw=make_raw(subject="new"), folders=[inbox])
    stale.name = "Inbox (renamed)"
    stale.save()
    assert _counts(inbox) == (1, 1) and inbox.name == "Inbox (renamed)"


def test_a_recount_finds_what_the_triggers_keep(mail_account, inbox, work, synced):
    kept = _stored()
    Folder.objects.update(message_count=0, unread_count=0)
    folder_counts_recount()
    assert _stored() == kept
