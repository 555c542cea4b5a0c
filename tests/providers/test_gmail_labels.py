"""Gmail labels against the sandbox Gmail API: created, renamed and deleted upstream, mirrored as folders."""

import pytest

from mailbox import sync
from mailbox.models import Folder, Message, MessageFolder

pytestmark = pytest.mark.django_db(transaction=True)


def _folders(account) -> dict[str, str]:
    return dict(Folder.objects.filter(account=account).values_list("remote_id", "name"))


def _labels_of(account, remote_id: str) -> set[str]:
    return set(
        MessageFolder.objects.filter(message__account=account, message__remote_id=remote_id).values_list(
            "folder__remote_id", flat=True
        )
    )


@pytest.mark.parametrize("next_sync", ["incremental", "full"])
def test_a_label_deleted_in_gmail_is_removed_locally_and_its_mail_kept(gmail_account, gmail_mailbox, next_sync):
    box, email = gmail_mailbox.store, gmail_mailbox.email
    projects = box.create_label(email, "Projects")
    unused = box.create_label(email, "Unused")
    kept = gmail_mailbox.deliver(subject="Kickoff", labels=("INBOX", projects))
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert _folders(gmail_account)[projects] == "Projects" and unused in _folders(gmail_account)
    assert _labels_of(gmail_account, kept) == {"INBOX", projects}

    box.delete_label(email, projects)
    box.delete_label(email, unused)  # no message had it: no history record tells of this one
    if next_sync == "full":
        box.expire_history(email)  # the next sync lists everything again
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"

    folders = _folders(gmail_account)
    assert projects not in folders and unused not in folders and "INBOX" in folders
    assert Message.objects.filter(account=gmail_account, remote_id=kept).exists()
    assert _labels_of(gmail_account, kept) == {"INBOX"}


def test_a_label_renamed_in_gmail_is_renamed_locally(gmail_account, gmail_mailbox):
    box, email = gmail_mailbox.store, gmail_mailbox.email
    label = box.create_label(email, "Projects")
    gmail_mailbox.deliver(subject="Kickoff", labels=("INBOX", label))
    sync.account_sync(account_id=gmail_account.pk)
    box.mailbox(email).labels[label]["name"] = "Projects 2025"
    assert sync.account_sync(account_id=gmail_account.pk).outcome == "ok"
    assert _folders(gmail_account)[label] == "Projects 2025"
