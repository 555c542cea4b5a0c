"""Who a mailbox sends as: its own address under the user's name, and (Gmail) the "Send mail as" aliases.

The aliases are read from the provider (``MailClient.identities``) at the first sync and every
``CHECK_EVERY`` after, and replace what was kept: an alias removed at Gmail disappears from the From menu.
The name on the mailbox's own address is ``MailAccount.display_name``: the provider's (Gmail's "Send mail as"
name) until the user types one of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import MailAccount
from mailbox.models import OutgoingMessage, SendAsAlias, SyncState
from providers.base import MailClient, SenderIdentity
from providers.errors import ProviderError, ReconnectRequired

logger = logging.getLogger(__name__)

CHECK_EVERY = timedelta(hours=6)


@dataclass(frozen=True)
class Sender:
    """One choice of the composer's From menu."""

    account: MailAccount
    address: str
    name: str
    alias: bool  # an alias of the account, not its own address

    @property
    def value(self) -> str:
        """The form value: the account's id, and for an alias its address."""
        return f"{self.account.pk}/{self.address}" if self.alias else str(self.account.pk)

    def __str__(self) -> str:
        """As the From menu shows it (a header would quote the name: ``formataddr``)."""
        return f"{self.name} <{self.address}>" if self.name else self.address


def senders_for(accounts) -> list[Sender]:
    """Every address the given mailboxes send from: each mailbox's own, then its aliases."""
    accounts = list(accounts)
    aliases: dict[int, list[SendAsAlias]] = {}
    for alias in SendAsAlias.objects.filter(account__in=accounts):
        aliases.setdefault(alias.account_id, []).append(alias)
    senders = []
    for account in accounts:
        senders.append(Sender(account=account, address=account.email, name=account.display_name, alias=False))
        senders += [
            Sender(account=account, address=alias.address, name=alias.name, alias=True)
            for alias in aliases.get(account.pk, [])
        ]
    return senders


def default_sender_value(account: MailAccount) -> str:
    """The From a new message starts with: the mailbox's default alias where the provider has one, else itself."""
    alias = account.aliases.filter(is_default=True).first()
    return f"{account.pk}/{alias.address}" if alias else str(account.pk)


def identities_refresh_if_due(*, account: MailAccount, client: MailClient, state: SyncState) -> bool:
    """Read the mailbox's identities from the provider when they were never read or ``CHECK_EVERY`` ago."""
    checked = state.identities_checked_at
    if checked is not None and timezone.now() - checked < CHECK_EVERY:
        return False
    try:
        identities = client.identities()
    except ReconnectRequired:
        raise
    except ProviderError as exc:  # the mail matters more: sync it, and read the aliases next time
        logger.warning("Could not read the addresses of account %s (%s); will try at the next sync", account.pk, exc)
        return False
    identities_store(account=account, identities=identities)
    SyncState.objects.filter(pk=state.pk).update(identities_checked_at=timezone.now())
    return True


def identities_store(*, account: MailAccount, identities: list[SenderIdentity]) -> None:
    """Keep what the provider said: the aliases replace the old ones; the provider's name for the mailbox's own
    address fills ``display_name`` only while the user has none of their own."""
    own = account.email.lower()
    aliases = {i.address.lower(): i for i in identities if not i.is_primary and i.address.lower() != own}
    primary = next((i for i in identities if i.is_primary or i.address.lower() == own), None)
    with transaction.atomic():
        SendAsAlias.objects.filter(account=account).exclude(address__in=[i.address for i in aliases.values()]).delete()
        for identity in aliases.values():
            SendAsAlias.objects.update_or_create(
                account=account,
                address=identity.address,
                defaults={"name": identity.name, "is_default": identity.is_default, "reply_to": identity.reply_to},
            )
        if primary is not None and primary.name and not account.display_name:
            MailAccount.objects.filter(pk=account.pk, display_name="").update(display_name=primary.name)
            account.display_name = primary.name


def reply_alias(*, account: MailAccount, recipients: list[dict]) -> SendAsAlias | None:
    """The alias a reply goes out from: the one the mail was sent to, if any (None: the mailbox's own address)."""
    addressed = {person.get("email", "").lower() for person in recipients}
    return next((a for a in SendAsAlias.objects.filter(account=account) if a.address.lower() in addressed), None)


def own_addresses(account: MailAccount) -> set[str]:
    """Every address that is the user's in this mailbox (lower-cased): a reply-all leaves them out."""
    return {account.email.lower(), *(a.lower() for a in account.aliases.values_list("address", flat=True))}


def sender_of(outgoing: OutgoingMessage) -> tuple[str, str]:
    """(name, address) for the From of ``outgoing``."""
    if outgoing.from_alias:
        return outgoing.from_name, outgoing.from_alias
    return outgoing.account.display_name or "", outgoing.account.email
