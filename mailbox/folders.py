"""The user's own folders (Gmail labels, IMAP folders): created, renamed and deleted at the provider first and
then here, so Mailhub never shows a folder the provider refused.

A folder's ``name`` is its full path, levels joined by its ``delimiter`` ("/" at Gmail, the server's own over
IMAP); the sidebar shows the levels as a tree (``Folder.depth``, ``Folder.tree_key``). Renaming a folder
renames the folders inside it. Only folders with the "user" role can change; one with folders inside it is not
deleted (they would lose their place). Deleting an IMAP folder deletes the mail in it, as at the server; deleting
a Gmail label leaves its mail in All mail.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from accounts.models import MailAccount
from mailbox import store
from mailbox.local import account_client, local_folder_of
from mailbox.models import Folder, Message
from providers import registry

NAME_MAX = 200
RESERVED = {"inbox", "drafts", "sent", "trash", "spam", "junk"}  # at the top level, names the system folders use


class FolderProblem(ValueError):
    """A folder change Mailhub refuses before asking the provider; ``str()`` is the user's words."""


def account_delimiter(account: MailAccount) -> str:
    """The delimiter of the account's folder tree (as the server listed it; "/" until it has)."""
    found = Folder.objects.filter(account=account).exclude(delimiter="").values_list("delimiter", flat=True).first()
    return found or "/"


def _inside(folder: Folder) -> Q:
    return Q(account=folder.account, name__startswith=folder.name + folder.delimiter) & ~Q(pk=folder.pk)


def _checked_name(
    account: MailAccount, *, name: str, prefix: str, delimiter: str, renaming: Folder | None = None
) -> str:
    """The full path of a folder called ``name`` inside ``prefix`` ("": at the top), or FolderProblem."""
    name = " ".join(name.split())
    if not name:
        raise FolderProblem(_("Give the folder a name."))
    if len(name) > NAME_MAX:
        raise FolderProblem(_("A folder name can be at most %(max)d characters long.") % {"max": NAME_MAX})
    if delimiter and delimiter in name:
        raise FolderProblem(
            _("A folder name cannot contain “%(delimiter)s”: to put a folder inside another, choose it as the parent.")
            % {"delimiter": delimiter}
        )
    full = f"{prefix}{delimiter}{name}" if prefix else name
    clash = Folder.objects.filter(account=account, name__iexact=full)
    if renaming is not None:
        clash = clash.exclude(pk=renaming.pk)
    if clash.exists() or (not prefix and full.casefold() in RESERVED):
        raise FolderProblem(_("There is already a folder named “%(name)s”.") % {"name": full})
    return full


def folder_create(*, account: MailAccount, name: str, parent: Folder | None = None) -> Folder:
    """Create the folder at the provider, then here. Raises FolderProblem or the provider's ActionRequired."""
    if parent is not None and parent.account_id != account.pk:
        raise FolderProblem(_("That parent folder is in another mailbox."))
    delimiter = parent.delimiter if parent else account_delimiter(account)
    prefix = (parent.remote_id if parent.role == Folder.Role.INBOX else parent.name) if parent else ""
    full = _checked_name(account, name=name, prefix=prefix, delimiter=delimiter)
    created = account_client(account).folder_create(name=full)
    return store.folder_upsert(
        account=account,
        remote_id=created.remote_id,
        name=created.name or full,
        role=Folder.Role.USER,
        is_selectable=created.is_selectable,
        delimiter=created.delimiter or delimiter,
    )


def folder_rename(*, folder: Folder, name: str) -> Folder:
    """Rename the folder (it stays where it is) at the provider, then here with the folders inside it."""
    if folder.role != Folder.Role.USER:
        raise FolderProblem(_("Mailhub does not rename the mailbox's own folders (Inbox, Sent, Trash…)."))
    full = _checked_name(
        folder.account, name=name, prefix=folder.parent_path, delimiter=folder.delimiter, renaming=folder
    )
    if full == folder.name:
        return folder
    renamed = account_client(folder.account).folder_rename(folder=local_folder_of(folder), name=full)
    old_name, old_remote = folder.name, folder.remote_id
    with transaction.atomic():
        for inner in Folder.objects.filter(_inside(folder)).select_for_update():
            inner.name = full + inner.name.removeprefix(old_name)
            if renamed.remote_id != old_remote and inner.remote_id.startswith(old_remote + folder.delimiter):
                inner.remote_id = renamed.remote_id + inner.remote_id.removeprefix(old_remote)
            inner.save(update_fields=["name", "remote_id"])
        folder.name, folder.remote_id = renamed.name or full, renamed.remote_id
        folder.save(update_fields=["name", "remote_id"])
    return folder


def folder_delete(*, folder: Folder) -> int:
    """Delete the folder at the provider, then here; returns how many messages went with it (IMAP)."""
    if folder.role != Folder.Role.USER:
        raise FolderProblem(_("Mailhub does not delete the mailbox's own folders (Inbox, Sent, Trash…)."))
    if Folder.objects.filter(_inside(folder)).exists():
        raise FolderProblem(_("This folder has folders inside it: delete those first."))
    account_client(folder.account).folder_delete(folder=local_folder_of(folder))
    account = folder.account
    message_ids = list(Message.objects.filter(messagefolder__folder=folder).values_list("pk", flat=True))
    store.folder_delete(account=account, remote_id=folder.remote_id)
    if registry.get(account.provider).folders_are_labels:
        return 0  # a label's mail is still in All mail
    homeless = Message.objects.filter(pk__in=message_ids, messagefolder__isnull=True)
    return store.messages_delete(account=account, remote_ids=list(homeless.values_list("remote_id", flat=True)))
