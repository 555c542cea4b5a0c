"""Labels and folders created, renamed and deleted from Mailhub, written to the provider over real sockets (the
sandbox Gmail API's labels.create/patch/delete; Dovecot's CREATE/RENAME/DELETE), and shown as a tree."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailbox import folders, sync
from mailbox.models import Folder, Message
from providers.errors import ActionRequired, ErrorCode
from tests.fixtures.ui import raw_text_message

pytestmark = pytest.mark.django_db(transaction=True)


class GmailLabels:
    def __init__(self, store, email: str) -> None:
        self.store, self.email = store, email

    def names(self) -> set[str]:
        return {label["name"] for label in self.store.labels(self.email) if label["type"] == "user"}

    def deliver(self, raw: bytes, folder: Folder) -> None:
        self.store.insert_message(self.email, raw, label_ids=["INBOX", folder.remote_id])


class ImapFolders:
    def __init__(self, dovecot, email: str) -> None:
        self.dovecot, self.email = dovecot, email

    def names(self) -> set[str]:
        with self.dovecot.client(self.email) as imap:
            listed = {name for _flags, _delimiter, name in imap.list_folders()}
        return listed - {"INBOX", "Drafts", "Sent Items", "Deleted Items", "Junk Email", "Archive"}

    def deliver(self, raw: bytes, folder: Folder) -> None:
        self.dovecot.append(self.email, raw, folder=folder.name)


@pytest.fixture
def mailbox_at(request, synced_mailbox):
    """(account, provider side) for a Gmail account and for an Outlook account on Dovecot, each synced once."""
    if synced_mailbox.provider == "google":
        return synced_mailbox, GmailLabels(request.getfixturevalue("sandbox_settings").gmail, synced_mailbox.email)
    return synced_mailbox, ImapFolders(request.getfixturevalue("dovecot"), synced_mailbox.email)


def _sync(account) -> None:
    assert sync.account_sync(account_id=account.pk).outcome == "ok"


def test_a_nested_folder_is_created_renamed_with_its_children_and_deleted(mailbox_at):
    account, side = mailbox_at
    projects = folders.folder_create(account=account, name="Projects")
    alpha = folders.folder_create(account=account, name="Älpha 2026", parent=projects)
    assert side.names() == {"Projects", "Projects/Älpha 2026"}
    assert (alpha.name, alpha.depth, alpha.leaf_label) == ("Projects/Älpha 2026", 1, "Älpha 2026")

    folders.folder_rename(folder=projects, name="Clients")
    assert side.names() == {"Clients", "Clients/Älpha 2026"}
    alpha.refresh_from_db()
    assert alpha.name == "Clients/Älpha 2026"
    _sync(account)  # the provider and the store agree: nothing forgotten, nothing added
    names = set(Folder.objects.filter(account=account, role="user").values_list("name", flat=True))
    assert names == {"Clients", "Clients/Älpha 2026"}
    assert Folder.objects.get(pk=alpha.pk).name == "Clients/Älpha 2026"  # the same row: its mail stays linked

    with pytest.raises(folders.FolderProblem):
        folders.folder_delete(folder=Folder.objects.get(pk=projects.pk))  # it has a folder inside
    folders.folder_delete(folder=Folder.objects.get(pk=alpha.pk))
    folders.folder_delete(folder=Folder.objects.get(pk=projects.pk))
    assert side.names() == set()
    assert not Folder.objects.filter(account=account, role="user").exists()


def test_a_renamed_folder_keeps_its_mail_without_downloading_it_again(mailbox_at):
    account, side = mailbox_at
    receipts = folders.folder_create(account=account, name="Receipts")
    raw, _mid = raw_text_message(subject="Invoice 7", body="Paid.", to=account.email)
    side.deliver(raw, receipts)
    _sync(account)
    message = Message.objects.get(account=account, subject="Invoice 7")
    folders.folder_rename(folder=receipts, name="Paid bills")
    _sync(account)
    assert Message.objects.get(pk=message.pk).folders.filter(name="Paid bills").exists()


def test_deleting_a_folder_does_to_its_mail_what_the_provider_does(mailbox_at):
    account, side = mailbox_at
    old = folders.folder_create(account=account, name="Old stuff")
    raw, _mid = raw_text_message(subject="Ancient", body="...", to=account.email)
    side.deliver(raw, old)
    _sync(account)
    gone = folders.folder_delete(folder=Folder.objects.get(pk=old.pk))
    left = Message.objects.filter(account=account, subject="Ancient")
    if isinstance(side, GmailLabels):
        assert gone == 0 and left.exists()  # a label's mail stays (here, in the Inbox)
    else:
        assert gone == 1 and not left.exists()  # an IMAP folder's mail goes with it
    _sync(account)
    assert left.exists() == isinstance(side, GmailLabels)


def test_names_mailhub_refuses_before_asking_the_provider(mailbox_at):
    account, side = mailbox_at
    folders.folder_create(account=account, name="Travel")
    for name, words in [("", "Give the folder a name"), ("a/b", "cannot contain"), ("travel", "already a folder"),
                        ("Inbox", "already a folder"), ("x" * 201, "at most 200")]:  # fmt: skip
        with pytest.raises(folders.FolderProblem, match=words):
            folders.folder_create(account=account, name=name)
    inbox = Folder.objects.get(account=account, role="inbox")
    with pytest.raises(folders.FolderProblem, match="own folders"):
        folders.folder_rename(folder=inbox, name="Mine")
    with pytest.raises(folders.FolderProblem, match="own folders"):
        folders.folder_delete(folder=inbox)
    assert side.names() == {"Travel"}


def test_a_name_the_provider_refuses_is_its_reason_not_a_crash(mailbox_at):
    account, side = mailbox_at
    travel = folders.folder_create(account=account, name="Travel")
    Folder.objects.filter(pk=travel.pk).update(name="Travel (old)")  # Mailhub's copy is behind the provider
    with pytest.raises(ActionRequired) as refused:
        folders.folder_create(account=account, name="Travel")
    assert refused.value.code == ErrorCode.FOLDER_REFUSED
    assert refused.value.detail  # the provider's own words, shown to the user
    assert side.names() == {"Travel"}


def test_the_folders_page_creates_renames_and_deletes_and_the_sidebar_shows_a_tree(mailbox_at, client, alice):
    account, side = mailbox_at
    client.force_login(alice)
    url = reverse("mailbox:folders", args=[account.pk])
    assert client.get(url).status_code == 200
    client.post(reverse("mailbox:folder_create", args=[account.pk]), {"name": "Family", "parent": ""})
    family = Folder.objects.get(account=account, name="Family")
    response = client.post(reverse("mailbox:folder_create", args=[account.pk]), {"name": "Kids", "parent": family.pk})
    assert response.status_code == 302
    assert side.names() == {"Family", "Family/Kids"}

    sidebar = client.get(reverse("mailbox:inbox")).content.decode()
    assert 'class="depth-1"' in sidebar and ">Kids</span>" in sidebar
    assert sidebar.index(">Family</span>") < sidebar.index(">Kids</span>")

    refused = client.post(
        reverse("mailbox:folder_create", args=[account.pk]), {"name": "family", "parent": ""}, follow=True
    )
    assert "There is already a folder named" in refused.content.decode()
    kids = Folder.objects.get(account=account, name="Family/Kids")
    client.post(reverse("mailbox:folder_rename", args=[kids.pk]), {"name": "Children"})
    assert side.names() == {"Family", "Family/Children"}
    client.post(reverse("mailbox:folder_delete", args=[kids.pk]))
    assert side.names() == {"Family"}


def test_another_users_folders_cannot_be_changed(mailbox_at, client, bob):
    account, side = mailbox_at
    mine = folders.folder_create(account=account, name="Private")
    client.force_login(bob)
    assert client.get(reverse("mailbox:folders", args=[account.pk])).status_code == 404
    assert client.post(reverse("mailbox:folder_rename", args=[mine.pk]), {"name": "Hacked"}).status_code == 404
    assert client.post(reverse("mailbox:folder_delete", args=[mine.pk])).status_code == 404
    assert client.post(reverse("mailbox:folder_create", args=[account.pk]), {"name": "X"}).status_code == 404
    assert side.names() == {"Private"}
