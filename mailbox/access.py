"""Who may read mail that is not theirs, and the record of every time someone did.

Reading other people's mail is a deliberate right, ``mailbox.read_all_mail``, given to a user or a group
explicitly: being staff or a superuser does not imply it. Every use is written to ``MailAccessLog``, which
the mailbox's owner sees on their "Who read my mail" page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser, Permission, User
from django.db.models import Q, QuerySet

from accounts.models import MailAccount
from mailbox.models import MailAccessLog

READ_ALL_MAIL = "mailbox.read_all_mail"
_APP_LABEL, _CODENAME = READ_ALL_MAIL.split(".")


def mail_read_all_allowed(*, user: User | AnonymousUser) -> bool:
    """True when ``user`` holds ``mailbox.read_all_mail`` itself or through a group (never implied by superuser)."""
    if not (user.is_authenticated and user.is_active):
        return False
    return (
        Permission.objects.filter(content_type__app_label=_APP_LABEL, codename=_CODENAME)
        .filter(Q(user=user) | Q(group__user=user))
        .exists()
    )


def mail_access_record(
    *,
    reader: User,
    account: MailAccount,
    action: str,
    object_type: str,
    object_id: int | None = None,
    description: str = "",
    path: str = "",
) -> MailAccessLog:
    return MailAccessLog.objects.create(
        reader=reader,
        reader_username=reader.get_username(),
        owner_id=account.user_id,
        account=account,
        account_email=account.email,
        action=action,
        object_type=object_type,
        object_id=object_id,
        description=description[:2000],
        path=path[:500],
    )


def mail_access_record_list(
    *, reader: User, account_ids: Iterable[int], object_type: str, search: str = "", path: str = ""
) -> list[MailAccessLog]:
    """One row per mailbox whose mail appeared in a list, with how many items of it were shown."""
    counts = Counter(account_ids)
    accounts = MailAccount.objects.in_bulk(list(counts))
    suffix = f"; search: {search}" if search else ""
    return [
        mail_access_record(
            reader=reader,
            account=accounts[account_id],
            action=MailAccessLog.Action.LIST,
            object_type=object_type,
            description=f"{count} shown{suffix}",
            path=path,
        )
        for account_id, count in sorted(counts.items())
        if account_id in accounts
    ]


def mail_access_log_for_owner(*, user: User, limit: int = 500) -> QuerySet[MailAccessLog]:
    return MailAccessLog.objects.filter(owner=user)[:limit]
