"""Connected mailboxes: tokens, refresh and the reauthorisation state."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import partial

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from accounts.models import MailAccount
from providers import registry
from providers.base import LocalMailbox, MailClient, TokenGrant
from providers.errors import ErrorCode, InvalidGrant, ProviderError, ReconnectRequired
from providers.models import ProviderApp
from providers.services import provider_app_usable, provider_apps_usable

logger = logging.getLogger(__name__)

IMAP_PROVIDER = "imap"  # the generic IMAP/SMTP provider: a password instead of tokens

# Refresh this long before the access token expires, so a sync never starts with a dying token.
REFRESH_MARGIN = timedelta(minutes=5)


class ReauthorizationRequired(ReconnectRequired):
    """The account is waiting for its user to reconnect it; nothing is asked of the provider meanwhile."""

    def __init__(self, *, code: ErrorCode) -> None:
        super().__init__(f"The mailbox must be reconnected ({code}).", code=code)


def account_display_name_set(*, account: MailAccount, name: str) -> None:
    """The name recipients see on mail from the mailbox's own address (the user's choice wins over the
    provider's from now on)."""
    account.display_name = name.strip()
    account.save(update_fields=["display_name"])


def account_mark_needs_reconnect(*, account: MailAccount, reason: ErrorCode) -> None:
    """The one place an account leaves "connected" for "reconnect": every engine's ReconnectRequired ends here.

    The token service marks the account before it raises, and the engine that catches the error marks it again:
    a row this copy already shows in that state is not written (or logged) twice.
    """
    if account.needs_reconnect and account.status_reason == reason:
        return
    account.status = (
        MailAccount.Status.NO_MAILBOX if reason == ErrorCode.NO_MAILBOX else MailAccount.Status.REAUTH_REQUIRED
    )
    account.status_reason = reason
    MailAccount.objects.filter(pk=account.pk).update(
        status=account.status, status_reason=account.status_reason, updated_at=timezone.now()
    )
    logger.info("Account %s needs reconnecting (%s)", account.pk, reason)


def account_store_grant(*, account: MailAccount, grant: TokenGrant) -> None:
    """Save a fresh grant; a rotated refresh token replaces the old one (Microsoft rotates them)."""
    account.access_token = grant.access_token
    account.token_expires_at = grant.expires_at
    if grant.refresh_token:
        account.refresh_token = grant.refresh_token
    if grant.scopes:
        account.scopes = " ".join(grant.scopes)
    account.save(update_fields=["access_token", "token_expires_at", "refresh_token", "scopes", "updated_at"])


def account_access_token(*, account: MailAccount, force_refresh: bool = False) -> str:
    """A valid access token for ``account``, refreshed shortly before expiry.

    Raises :class:`ReauthorizationRequired` (after recording it on the account) when the
    provider says the refresh token is dead, so callers stop instead of retrying.
    ``providers.base.ProviderError`` (temporary failures) propagates for the caller to retry.
    """
    if account.needs_reconnect:
        raise ReauthorizationRequired(code=ErrorCode(account.status_reason or ErrorCode.ACCESS_REVOKED))
    expiring = account.token_expires_at is None or account.token_expires_at - REFRESH_MARGIN <= timezone.now()
    if account.access_token and not expiring and not force_refresh:
        return account.access_token
    try:
        with transaction.atomic():
            # Lock the row: two workers refreshing at once would each rotate the refresh token,
            # and the loser would save one Microsoft has already invalidated.
            locked = MailAccount.objects.select_for_update().get(pk=account.pk)
            refreshed_meanwhile = locked.access_token != account.access_token
            fresh = (
                bool(locked.access_token)
                and locked.token_expires_at is not None
                and locked.token_expires_at - REFRESH_MARGIN > timezone.now()
            )
            if fresh and (refreshed_meanwhile or not force_refresh):
                _copy_tokens(source=locked, target=account)
                return account.access_token
            app = ProviderApp.objects.get(provider=account.provider)
            grant = registry.get(account.provider).refresh(app=app, refresh_token=locked.refresh_token)
            account_store_grant(account=locked, grant=grant)
    except InvalidGrant as exc:
        # Outside the transaction above, so the state is saved even though we raise.
        account_mark_needs_reconnect(account=account, reason=exc.code)
        raise ReauthorizationRequired(code=exc.code) from None
    _copy_tokens(source=locked, target=account)
    return account.access_token


def _copy_tokens(*, source: MailAccount, target: MailAccount) -> None:
    target.access_token = source.access_token
    target.refresh_token = source.refresh_token
    target.token_expires_at = source.token_expires_at


def account_connect(*, user_id: int, provider_id: str, grant: TokenGrant) -> tuple[MailAccount, bool]:
    """Create or update the user's mailbox for ``grant``; reconnecting an address updates it in place.

    Returns the account and whether it is new. Raises ProviderError when a first connection came
    without a refresh token (the mailbox could not be synced past the first hour).
    """
    existing = MailAccount.objects.filter(user_id=user_id, provider=provider_id, email=grant.email).first()
    if not grant.refresh_token and not (existing and existing.refresh_token):
        raise ProviderError(
            "The provider did not grant offline access, so Mailhub could not keep this mailbox in sync."
        )
    account = existing or MailAccount(user_id=user_id, provider=provider_id, email=grant.email)
    account.display_name = grant.name or account.display_name
    account.access_token = grant.access_token
    account.token_expires_at = grant.expires_at
    account.refresh_token = grant.refresh_token or account.refresh_token
    account.scopes = " ".join(grant.scopes)
    account.status = MailAccount.Status.ACTIVE
    account.status_reason = ""
    account.save()
    return account, existing is None


def providers_off() -> set[str]:
    """The providers whose mailboxes must not sync or send: turned off (or left unconfigured) by an admin."""
    return set(registry.PROVIDERS) - {app.provider for app in provider_apps_usable()}


def mailboxes_by_provider() -> dict[str, int]:
    """Connected mailboxes per provider id (the Mail settings page warns before one is turned off)."""
    rows = MailAccount.objects.values("provider").annotate(count=Count("pk")).values_list("provider", "count")
    return dict(rows)


def account_mail_client(*, account: MailAccount, local: LocalMailbox) -> MailClient:
    """The provider's client for ``account`` syncing into ``local``, given a token callable that refreshes
    through this module. Refuses while an administrator has the provider turned off."""
    if provider_app_usable(provider_id=account.provider) is None:
        raise ProviderError("the provider is turned off in Mail settings", code=ErrorCode.PROVIDER_OFF)
    return registry.get(account.provider).mail_client(
        account=account, access_token=partial(account_access_token, account=account), local=local
    )


def account_disconnect(*, account: MailAccount) -> None:
    """Revoke the grant at the provider where possible, then delete the account and its local mail."""
    app = ProviderApp.objects.filter(provider=account.provider).first()
    token = account.refresh_token or account.access_token
    if app and token:
        try:
            registry.get(account.provider).revoke(app=app, token=token)
        except ProviderError:
            logger.warning("Could not revoke the grant of account %s at the provider", account.pk)
    account.delete()


@dataclass(frozen=True)
class MailboxServers:
    """Where a generic IMAP/SMTP mailbox is (as checked by ``providers.imap.check``)."""

    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str
    smtp_port: int
    smtp_security: str


def account_connect_password(
    *, user_id: int, email: str, username: str, password: str, servers: MailboxServers
) -> tuple[MailAccount, bool]:
    """Create or update the user's IMAP/SMTP mailbox ``email`` (already checked); returns it and whether it is new.

    Connecting an address again updates its servers and password in place and makes it active again.
    """
    existing = MailAccount.objects.filter(user_id=user_id, provider=IMAP_PROVIDER, email=email).first()
    account = existing or MailAccount(user_id=user_id, provider=IMAP_PROVIDER, email=email)
    account.username = username
    account.password = password
    for name, value in asdict(servers).items():
        setattr(account, name, value)
    account.status = MailAccount.Status.ACTIVE
    account.status_reason = ""
    account.save()
    return account, existing is None


def account_password_update(*, account: MailAccount, password: str) -> None:
    """Store a new (checked) password and make the account active again: "Reconnect" for the IMAP provider."""
    account.password = password
    account.status = MailAccount.Status.ACTIVE
    account.status_reason = ""
    account.save(update_fields=["password", "status", "status_reason", "updated_at"])


def account_servers(*, account: MailAccount) -> MailboxServers:
    return MailboxServers(
        imap_host=account.imap_host,
        imap_port=account.imap_port or 993,
        imap_security=account.imap_security,
        smtp_host=account.smtp_host,
        smtp_port=account.smtp_port or 587,
        smtp_security=account.smtp_security,
    )
