"""Write-back: a user's action on messages, applied locally at once and then at the provider.

:func:`messages_change` changes the local store in the request and queues :func:`messages_change_apply`
(the ``messages_change_apply`` task), which tells the provider; a provider failure is handled like the sync's.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.db.models import QuerySet

from accounts.models import MailAccount
from accounts.services import account_mark_needs_reconnect
from mailbox import store
from mailbox.local import account_client, local_messages
from mailbox.models import Folder, Message
from mailbox.sync import SyncOutcome, SyncResult
from providers import registry
from providers.base import ChangeKind, MessageChange
from providers.errors import ProviderError, ReconnectRequired

logger = logging.getLogger(__name__)


def _role_folders(account: MailAccount) -> dict[str, Folder]:
    folders: dict[str, Folder] = {}
    for folder in Folder.objects.filter(account=account).exclude(role=Folder.Role.USER):
        folders.setdefault(folder.role, folder)
    return folders


def _change_local(*, account: MailAccount, remote_ids: list[str], change: MessageChange) -> None:
    kind = change.kind
    if kind in (ChangeKind.READ, ChangeKind.UNREAD):
        store.message_flags_update(account=account, remote_ids=remote_ids, is_read=kind == ChangeKind.READ)
        return
    roles = _role_folders(account)
    if kind in (ChangeKind.STAR, ChangeKind.UNSTAR):
        store.message_flags_update(account=account, remote_ids=remote_ids, is_starred=kind == ChangeKind.STAR)
        starred = roles.get(Folder.Role.STARRED)  # Gmail shows stars as a label too
        if starred is not None:
            change_sets = ([starred], []) if kind == ChangeKind.STAR else ([], [starred])
            store.message_folders_change(
                account=account, remote_ids=remote_ids, add=change_sets[0], remove=change_sets[1]
            )
        return
    inbox, trash, spam = roles.get(Folder.Role.INBOX), roles.get(Folder.Role.TRASH), roles.get(Folder.Role.SPAM)
    target = None
    if change.folder_remote_id:
        target = Folder.objects.filter(account=account, remote_id=change.folder_remote_id).first()
    add: list[Folder | None] = []  # a role the account lacks is None, left out below
    remove: list[Folder | None] = []
    if kind == ChangeKind.ARCHIVE:
        remove = [inbox]
    elif kind == ChangeKind.TRASH:
        add, remove = [trash], [inbox, spam]
    elif kind == ChangeKind.UNTRASH:
        add, remove = [inbox], [trash]
    elif kind == ChangeKind.UNARCHIVE:
        add, remove = [inbox], [roles.get(Folder.Role.ARCHIVE)]
    elif kind == ChangeKind.MOVE and target is not None:
        remove = [f for f in (inbox, trash, spam) if f != target]
        add = [target]
    elif kind == ChangeKind.ADD_LABEL and target is not None:
        add = [target]
    elif kind == ChangeKind.REMOVE_LABEL and target is not None:
        remove = [target]
    elif kind == ChangeKind.DELETE_FOREVER:
        remove = [trash]  # the row itself goes once the provider has deleted it (messages_change_apply)
    store.message_folders_change(
        account=account, remote_ids=remote_ids, add=[f for f in add if f], remove=[f for f in remove if f]
    )


@dataclass(frozen=True)
class Undo:
    """How to take back a change: the opposite change(s), on exactly the messages it changed."""

    changes: list[MessageChange]
    message_ids: list[int]


# The opposite of each change that can be taken back, and which of the user's messages the change really moves.
_UNDO: dict[ChangeKind, tuple[ChangeKind, Callable[[QuerySet[Message]], QuerySet[Message]]]] = {
    ChangeKind.READ: (ChangeKind.UNREAD, lambda q: q.filter(is_read=False)),
    ChangeKind.UNREAD: (ChangeKind.READ, lambda q: q.filter(is_read=True)),
    ChangeKind.STAR: (ChangeKind.UNSTAR, lambda q: q.filter(is_starred=False)),
    ChangeKind.UNSTAR: (ChangeKind.STAR, lambda q: q.filter(is_starred=True)),
    ChangeKind.ARCHIVE: (ChangeKind.UNARCHIVE, lambda q: q.filter(folders__role=Folder.Role.INBOX)),
    ChangeKind.TRASH: (ChangeKind.UNTRASH, lambda q: q.exclude(folders__role=Folder.Role.TRASH)),
}
# Folders a move is taken back between (Trash and Spam have their own actions: Delete and its undo).
_MOVE_UNDOABLE = {Folder.Role.INBOX, Folder.Role.ARCHIVE, Folder.Role.USER}


def undo_plan(*, user, message_ids: Sequence[int], change: MessageChange, origin: Folder | None = None) -> Undo | None:
    """Before ``change`` is applied: how to undo it, or None (nothing would change, or it cannot be undone).

    A move is undone for the messages that were in ``origin`` (the folder the list showed) and not yet in the
    target: back to ``origin``, and, where folders are labels, the target's label taken off again.
    """
    own = Message.objects.filter(pk__in=list(message_ids), account__user=user)
    if change.kind == ChangeKind.MOVE:
        return _move_undo_plan(own, change=change, origin=origin)
    if change.kind not in _UNDO:
        return None
    opposite, changed_by = _UNDO[change.kind]
    ids = list(changed_by(own).values_list("pk", flat=True).distinct())
    return Undo(changes=[MessageChange(opposite)], message_ids=ids) if ids else None


def _move_undo_plan(own: QuerySet[Message], *, change: MessageChange, origin: Folder | None) -> Undo | None:
    if origin is None or origin.remote_id == change.folder_remote_id or origin.role not in _MOVE_UNDOABLE:
        return None
    target = Folder.objects.filter(account=origin.account, remote_id=change.folder_remote_id).first()
    if target is None or target.role not in _MOVE_UNDOABLE:
        return None
    moved = own.filter(account=origin.account, folders=origin).exclude(folders=target)
    ids = list(moved.values_list("pk", flat=True).distinct())
    changes = [MessageChange(ChangeKind.MOVE, origin.remote_id)]
    if registry.get(origin.account.provider).folders_are_labels:
        changes.append(MessageChange(ChangeKind.REMOVE_LABEL, target.remote_id))  # labels commute: safe to queue
    return Undo(changes=changes, message_ids=ids) if ids else None


def messages_change(*, user, message_ids: Sequence[int], change: MessageChange) -> int:
    """Apply ``change`` to the user's own messages among ``message_ids`` locally now, and queue the write-back.

    Returns how many messages were changed; ids of other users' messages are ignored.
    """
    from mailbox import tasks

    rows = Message.objects.filter(pk__in=list(message_ids), account__user=user).values_list(
        "account_id", "pk", "remote_id"
    )
    by_account: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for account_id, pk, remote_id in rows:
        by_account[account_id].append((pk, remote_id))
    count = 0
    with transaction.atomic():
        for account in MailAccount.objects.filter(pk__in=list(by_account)):
            pairs = by_account[account.pk]
            _change_local(account=account, remote_ids=[r for _, r in pairs], change=change)
            ids = [pk for pk, _ in pairs]
            count += len(ids)
            transaction.on_commit(
                partial(tasks.messages_change_apply.delay, account.pk, ids, str(change.kind), change.folder_remote_id)
            )
    return count


def messages_change_apply(*, account_id: int, message_ids: Sequence[int], change: MessageChange) -> SyncResult:
    """Write a change back to the provider (the task behind :func:`messages_change`)."""
    account = MailAccount.objects.filter(pk=account_id).first()
    if account is None or account.needs_reconnect:
        return SyncResult(SyncOutcome.STOPPED)
    messages = list(Message.objects.filter(account=account, pk__in=list(message_ids)))
    if not messages:
        return SyncResult(SyncOutcome.OK)
    try:
        account_client(account).apply_changes(messages=local_messages(messages), change=change)
    except ReconnectRequired as exc:
        account_mark_needs_reconnect(account=account, reason=exc.code)
        return SyncResult(SyncOutcome.STOPPED)
    except ProviderError as exc:
        logger.warning("Write-back for account %s failed: %s", account_id, exc)
        return SyncResult(SyncOutcome.RETRY, retry_after=exc.retry_after)
    if change.kind == ChangeKind.DELETE_FOREVER:
        # Deleted for good at the provider: rows now in no folder at all are gone there too.
        homeless = Message.objects.filter(pk__in=[m.pk for m in messages], folders__isnull=True)
        store.messages_delete(account=account, remote_ids=homeless.values_list("remote_id", flat=True))
    return SyncResult(SyncOutcome.OK)
