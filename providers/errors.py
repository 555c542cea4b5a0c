"""How a provider fails: a few typed errors, each retryable or not, with a retry delay and a short code.

Providers raise these and never change any state themselves; the mailbox's engines (sync, write-back,
outbox) alone turn them into sync, account and outbox state:

- a retryable error (``retryable``: network, 5xx, throttling, a dropped connection) is retried with a
  backoff, the provider's ``retry_after`` when it gave one;
- :class:`ReconnectRequired` (the grant or password is dead, the identity has no mailbox, the provider
  refused this app access) stops the account until the user reconnects it, the same way for every provider;
- :class:`ActionRequired` (an administrator's setting) is not retried soon.

What users read is chosen by the code (:func:`error_message`, translatable), not taken from the text of
the exception, which is for logs and may name protocol details (never a secret).
"""

from __future__ import annotations

from enum import StrEnum

from django.utils.translation import gettext_lazy as _


class ErrorCode(StrEnum):
    PROVIDER_FAILED = "provider_failed"  # 5xx, a refused command, a connection dropped mid-way
    UNREACHABLE = "unreachable"  # the server could not be reached at all
    THROTTLED = "throttled"  # rate limits and quotas
    ACCESS_REVOKED = "access_revoked"  # the refresh token no longer works
    PASSWORD_REFUSED = "password_refused"  # noqa: S105 - a code: the server no longer accepts the password
    ACCESS_DENIED = "access_denied"  # signed in, but the provider refuses this app the mailbox
    NO_MAILBOX = "no_mailbox"  # the identity has no mailbox at this provider
    ACTION_REQUIRED = "action_required"  # a person must act first (the provider's reply says why)
    SMTP_AUTH_DISABLED = "smtp_auth_disabled"  # Exchange: an administrator must turn on Authenticated SMTP
    RECIPIENTS_REFUSED = "recipients_refused"  # the server refused some recipients: nothing was sent
    NO_RECIPIENTS = "no_recipients"  # a message with nobody to send it to
    CONSENT_DENIED = "consent_denied"  # the user cancelled or refused at the provider
    SEND_UNCERTAIN = "send_uncertain"  # handed over, and the answer was lost
    PROVIDER_OFF = "provider_off"  # an administrator turned the provider off in Mail settings
    ALIAS_REFUSED = "alias_refused"  # the From is not (or no longer) an address the mailbox may send as
    VARIABLE_MISSING = "variable_missing"  # a template variable has no value for this recipient: not sent
    CANCELLED = "cancelled"  # the user stopped it before it went
    FOLDER_REFUSED = "folder_refused"  # the provider would not create, rename or delete a folder (its reply says why)
    UNEXPECTED = "unexpected"  # not a provider's error: our own code crashed (the engines log it)


class ProviderError(Exception):
    """The provider failed in a way worth retrying later. ``str(exc)`` is safe to log (never a secret)."""

    code: ErrorCode = ErrorCode.PROVIDER_FAILED
    retryable: bool = True

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, code: ErrorCode | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.detail = detail  # what the provider itself answered (a reply, the addresses it refused), shown to users
        if code is not None:
            self.code = code


class ReconnectRequired(ProviderError):
    """Nothing works until the user reconnects the mailbox (sign in again, or a new password)."""

    code = ErrorCode.ACCESS_REVOKED
    retryable = False


class InvalidGrant(ReconnectRequired):
    """The grant (code or refresh token) is expired, revoked or already used."""


class AccessDenied(ReconnectRequired):
    """The sign-in works but the provider refuses this app the mailbox (a permission withdrawn)."""

    code = ErrorCode.ACCESS_DENIED


class NoMailbox(ReconnectRequired):
    """The identity is valid but has no mailbox the provider lets us reach."""

    code = ErrorCode.NO_MAILBOX


class ActionRequired(ProviderError):
    """Retrying cannot help until a person acts (an administrator's setting)."""

    code = ErrorCode.ACTION_REQUIRED
    retryable = False


class AuthorizationDenied(ProviderError):
    """The user cancelled or refused consent at the provider."""

    code = ErrorCode.CONSENT_DENIED
    retryable = False


class SendUncertain(ProviderError):
    """The message was handed to the provider and no answer came back: it may or may not have gone.

    Only ``MailClient.send`` raises it, and only after calling ``handoff()``. Any other error from ``send``
    means the provider certainly does not have the message.
    """

    code = ErrorCode.SEND_UNCERTAIN


_MESSAGES = {
    ErrorCode.PROVIDER_FAILED: _("%(provider)s failed to answer; Mailhub will try again shortly."),
    ErrorCode.UNREACHABLE: _("%(provider)s's mail server could not be reached; Mailhub will try again shortly."),
    ErrorCode.THROTTLED: _("%(provider)s asked Mailhub to slow down; syncing resumes by itself."),
    ErrorCode.ACCESS_REVOKED: _("Access to this mailbox was revoked or has expired. Reconnect it to resume syncing."),
    ErrorCode.PASSWORD_REFUSED: _(
        "The mail server no longer accepts the password stored for this mailbox (was it changed?). "
        "Reconnect and enter the new password to resume syncing."
    ),
    ErrorCode.ACCESS_DENIED: _("%(provider)s refused Mailhub access to this mailbox. Reconnect it and allow access."),
    ErrorCode.NO_MAILBOX: _(
        "%(provider)s accepted the sign-in, but this account has no mailbox there. Connect an account that has one."
    ),
    ErrorCode.ACTION_REQUIRED: _("%(provider)s refused until an administrator changes a setting."),
    ErrorCode.SMTP_AUTH_DISABLED: _(
        '%(provider)s refused to send: SMTP sending ("Authenticated SMTP") is turned off for this mailbox, as it is '
        "by default in Microsoft 365 tenants created after January 2020. An administrator must enable it: in the "
        "Microsoft 365 admin center open Users > Active users > this user > Mail > Manage email apps and tick "
        '"Authenticated SMTP" (or run Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled '
        "$false), and make sure Security defaults do not block it. Then retry the message."
    ),
    ErrorCode.RECIPIENTS_REFUSED: _("%(provider)s refused some recipients, so nothing was sent."),
    ErrorCode.NO_RECIPIENTS: _("This message has no recipients."),
    ErrorCode.CONSENT_DENIED: _("Access was not granted at %(provider)s."),
    ErrorCode.SEND_UNCERTAIN: _("The connection broke while %(provider)s was taking the message."),
    ErrorCode.PROVIDER_OFF: _(
        "Your administrator turned %(provider)s off in Mail settings: this mailbox does not sync or send until it "
        "is turned on again. The mail already here stays readable."
    ),
    ErrorCode.ALIAS_REFUSED: _(
        "%(provider)s does not let this mailbox send from this address: it is not, or no longer, one of its "
        'verified "Send mail as" addresses. Nothing was sent. Choose another From, or add the address at '
        "%(provider)s, then send again."
    ),
    ErrorCode.VARIABLE_MISSING: _("Not sent: a template variable has no value for this recipient."),
    ErrorCode.CANCELLED: _("Cancelled before it went: not sent."),
    ErrorCode.FOLDER_REFUSED: _("%(provider)s refused to change the folder."),
    ErrorCode.UNEXPECTED: _("Mailhub stopped on an unexpected error; it will try again."),
}


def error_message(code: str, *, provider: str) -> str:
    """The user's words for an error code (translated; an unknown code gives the generic one)."""
    known = ErrorCode(code) if code in ErrorCode.__members__.values() else ErrorCode.PROVIDER_FAILED
    return str(_MESSAGES[known]) % {"provider": provider}
